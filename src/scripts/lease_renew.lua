-- Renews the lease while both the lock key and the lease record carry the caller's token:
-- moves the record's renewal counter on (standbys watch it) and, when asked (every
-- lock_ttl / 3 and on heartbeat()), resets the lock key's full TTL (never adding to it) and
-- writes the heartbeat and the caller's presence in the same round trip.
-- KEYS[1] primary_lock, KEYS[2] lease record, KEYS[3] heartbeat, KEYS[4] instances
-- ARGV[1] token, ARGV[2] '1' to refresh, ARGV[3] lock ttl (ms), ARGV[4] heartbeat value,
-- ARGV[5] heartbeat ttl (ms), ARGV[6] instance id
-- Returns {1, seq} when renewed, {0} when the lease is no longer the caller's.
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0}
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
if ARGV[2] == '1' then
  local ttl = tonumber(ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('ZADD', KEYS[4], now + ttl, ARGV[6])
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('HSET', KEYS[2], 'renewed_at', now)
end
return {1, seq}
