-- Publishes one instance's stall meter summary for operators (quantshift-state status and
-- metrics), from the manager's publisher thread (never the lease thread), about every second.
-- Each entry is `<until ms> <summary>`: it counts until that server time, so a dead
-- instance's entry is ignored by readers once it lapses, and dropped here by the next
-- publisher; the key itself expires when no instance publishes any more.
-- KEYS[1] lease stalls hash
-- ARGV[1] instance id, ARGV[2] summary (JSON), ARGV[3] ttl (ms)
-- Returns the number of entries left.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now + ttl) .. ' ' .. ARGV[2])
local entries = redis.call('HGETALL', KEYS[1])
local left = 0
for i = 1, #entries, 2 do
  local until_ms = tonumber(string.match(entries[i + 1], '^(%d+) '))
  if until_ms == nil or until_ms <= now then
    redis.call('HDEL', KEYS[1], entries[i])
  else
    left = left + 1
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
return left
