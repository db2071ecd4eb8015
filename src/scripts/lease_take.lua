-- Takes the lease by replacing the lease record the caller last saw (compare-and-set on the
-- record's token and renewal counter), and hands out the fencing epoch in the same step.
-- The caller decides when a take is safe (src/lease/mod.rs); this script only makes sure
-- nothing moved since it looked: a holder that renewed meanwhile keeps the lease.
-- KEYS[1] primary_lock, KEYS[2] epoch, KEYS[3] lease record, KEYS[4] heartbeat, KEYS[5] instances
-- ARGV[1] '0': expects no record, '1': expects the record with token ARGV[2] ('' released) and
-- seq ARGV[3]; ARGV[4] new token, ARGV[5] lock ttl (ms), ARGV[6] the taker's deadline (ms),
-- ARGV[7] the highest epoch the caller has seen, ARGV[8] heartbeat value, ARGV[9] heartbeat
-- ttl (ms), ARGV[10] instance id, ARGV[11] presence ttl (ms).
-- Returns {1, epoch} when taken, {0} when the record is no longer what the caller saw, {2}
-- when the lock key carries a token the record does not name (a holder that keeps no record,
-- such as the predecessor library, or a lock set by hand): never taken from, it must expire.
local record = redis.call('HMGET', KEYS[3], 'token', 'seq')
if ARGV[1] == '0' then
  if record[1] then return {0} end
elseif record[1] ~= ARGV[2] or (tonumber(record[2]) or 0) ~= tonumber(ARGV[3]) then
  return {0}
end
local lock = redis.call('GET', KEYS[1])
if lock and lock ~= ARGV[2] then
  return {2}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- Never backwards, even when every key was lost: past the stored counter, past what the
-- caller has seen, and at least the server's time in ms (later than any epoch handed out
-- before a loss, which happened at least one take-over wait earlier).
local epoch = math.max((tonumber(redis.call('GET', KEYS[2])) or 0) + 1,
  (tonumber(ARGV[7]) or 0) + 1, now)
local epoch_text = string.format('%.0f', epoch)
redis.call('SET', KEYS[2], epoch_text)
local ttl = tonumber(ARGV[5])
redis.call('SET', KEYS[1], ARGV[4], 'PX', ttl)
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'token', ARGV[4], 'seq', 0, 'deadline_ms', ARGV[6],
  'epoch', epoch_text, 'renewed_at', now, 'taken_at', now)
redis.call('SET', KEYS[4], ARGV[8], 'PX', ARGV[9])
local presence = tonumber(ARGV[11])
redis.call('ZADD', KEYS[5], now + presence, ARGV[10])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
redis.call('PEXPIRE', KEYS[5], presence)
return {1, epoch}
