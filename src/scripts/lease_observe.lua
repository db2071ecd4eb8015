-- A standby's look at the lease record that also records it among the live instances (every
-- presence interval, 500 ms by default; the other looks are a plain HMGET). An instance counts
-- as live until the score its last presence wrote (server ms): a dead one drops out within
-- the presence TTL (1.5 s by default).
-- KEYS[1] lease record, KEYS[2] instances
-- ARGV[1] presence ttl (ms), ARGV[2] instance id
-- Returns the record's token, seq, deadline_ms and epoch (nil when absent).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], ttl)
return redis.call('HMGET', KEYS[1], 'token', 'seq', 'deadline_ms', 'epoch')
