-- Takes the primary lease if nobody holds it, and bumps the fencing epoch in the same step.
-- Every attempt also records the caller as a live instance, so operators can see standbys.
-- KEYS[1] primary_lock, KEYS[2] epoch, KEYS[3] heartbeat, KEYS[4] instances
-- ARGV[1] token, ARGV[2] lock ttl (ms), ARGV[3] heartbeat value, ARGV[4] heartbeat ttl (ms),
-- ARGV[5] instance id, ARGV[6] the highest epoch the caller has seen (0 if none)
-- Returns the new epoch (> 0), or minus the current epoch when another instance holds the
-- lease. The epoch never goes backwards for the caller: a master promoted from a replica
-- that missed the last INCR is moved past every epoch the caller has seen.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('PEXPIRE', KEYS[4], ARGV[2])
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[6]) or 0
  if epoch <= floor then
    epoch = floor + 1
    redis.call('SET', KEYS[2], epoch)
  end
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
  return epoch
end
return -(tonumber(redis.call('GET', KEYS[2])) or 0)
