-- Renews the lease only while it still carries our token, resetting the full TTL
-- (never adding to it), and writes the heartbeat in the same round trip.
-- KEYS[1] primary_lock, KEYS[2] heartbeat, KEYS[3] instances
-- ARGV[1] token, ARGV[2] lock ttl (ms), ARGV[3] heartbeat value, ARGV[4] heartbeat ttl (ms),
-- ARGV[5] instance id
-- Returns 1 when renewed, 0 when the lease is no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return 1
end
return 0
