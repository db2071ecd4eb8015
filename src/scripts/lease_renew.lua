-- Renews the lease while both the lock key and the lease record carry the caller's token:
-- moves the record's renewal counter on (standbys watch it) and records the server time of
-- the renewal (`renewed_at`: with `deadline_ms`, when the holder's deadline falls). When asked
-- to refresh (ARGV[2] '1': every lock_ttl / 3 and on heartbeat()) it also resets the lock
-- key's full TTL (never adding to it) and writes the heartbeat; with '1' or '2' (every
-- presence interval) it records the caller among the live instances.
-- KEYS[1] primary_lock, KEYS[2] lease record, KEYS[3] heartbeat, KEYS[4] instances
-- ARGV[1] token, ARGV[2] '0', '1' to refresh or '2' for presence only, ARGV[3] lock ttl (ms),
-- ARGV[4] heartbeat value, ARGV[5] heartbeat ttl (ms), ARGV[6] instance id, ARGV[7] presence
-- ttl (ms)
-- Returns {1, seq} when renewed, {0} when the lease is no longer the caller's.
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0}
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HSET', KEYS[2], 'renewed_at', now)
if ARGV[2] == '1' then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
end
if ARGV[2] == '1' or ARGV[2] == '2' then
  local presence = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[4], now + presence, ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('PEXPIRE', KEYS[4], presence)
end
return {1, seq}
