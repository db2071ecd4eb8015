-- Takes the primary lease if nobody holds it, and bumps the fencing epoch in the same step.
-- KEYS[1] primary_lock, KEYS[2] epoch, KEYS[3] heartbeat
-- ARGV[1] token, ARGV[2] lock ttl (ms), ARGV[3] heartbeat value, ARGV[4] heartbeat ttl (ms)
-- Returns the new epoch, or nil when another instance holds the lease.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
  return epoch
end
return false
