-- Takes the primary lease if nobody holds it, and bumps the fencing epoch in the same step.
-- Every attempt also records the caller as a live instance, so operators can see standbys.
-- KEYS[1] primary_lock, KEYS[2] epoch, KEYS[3] heartbeat, KEYS[4] instances
-- ARGV[1] token, ARGV[2] lock ttl (ms), ARGV[3] heartbeat value, ARGV[4] heartbeat ttl (ms),
-- ARGV[5] instance id
-- Returns the new epoch, or nil when another instance holds the lease.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('PEXPIRE', KEYS[4], ARGV[2])
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
  return epoch
end
return false
