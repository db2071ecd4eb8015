-- Renews the lease only while it still carries our token, resetting the full TTL
-- (never adding to it), and writes the heartbeat and the lease record in the same round trip.
-- KEYS[1] primary_lock, KEYS[2] heartbeat, KEYS[3] instances, KEYS[4] lease record
-- ARGV[1] token, ARGV[2] lock ttl (ms), ARGV[3] heartbeat value, ARGV[4] heartbeat ttl (ms),
-- ARGV[5] instance id, ARGV[6] our liveness channel ('' for none)
-- Returns {1, recorded, run_id} when renewed (recorded: our liveness vouches for the lease),
-- {0, 1, ''} when another instance holds the lease, {0, 0, ''} when the lease key is gone.
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] then
  if holder then return {0, 1, ''} end
  return {0, 0, ''}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
local channel = ''
if ARGV[6] ~= '' and (tonumber(redis.call('PUBSUB', 'NUMSUB', ARGV[6])[2]) or 0) > 0 then
  channel = ARGV[6]
end
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
redis.call('HSET', KEYS[4], 'token', ARGV[1], 'renewed_at', now, 'ttl', ARGV[2],
  'channel', channel, 'run_id', run_id, 'released', '0', 'loss_at', 0)
local recorded = 0
if channel ~= '' then recorded = 1 end
return {1, recorded, run_id}
