-- Renews the lease only while it still carries our token, resetting the full TTL
-- (never adding to it), and writes the heartbeat in the same round trip.
-- KEYS[1] primary_lock, KEYS[2] heartbeat
-- ARGV[1] token, ARGV[2] lock ttl (ms), ARGV[3] heartbeat value, ARGV[4] heartbeat ttl (ms)
-- Returns 1 when renewed, 0 when the lease is no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  return 1
end
return 0
