-- A bot's status for operators (quantshift-state status, watch, metrics) in one atomic,
-- read-only call: the lease, epoch, heartbeat, state, live instances and the number of
-- positions belong to one moment. Never writes, never scans.
-- KEYS[1] lease  KEYS[2] epoch  KEYS[3] heartbeat  KEYS[4] state  KEYS[5] instances
-- KEYS[6] positions index
-- ARGV[1] position key prefix, ARGV[2] now (Unix ms): instances whose liveness score is not
-- older are live
-- Returns {lease holder token, lease PTTL, epoch, heartbeat, state, live instances,
-- positions}: the positions are the index's symbols whose key exists, read in chunks (unpack()
-- and the Lua stack take a few thousand arguments at most). A WRONGTYPE error when a position
-- key holds another Redis type, as loading the positions would: MGET reads such a key as
-- missing, EXISTS counts it.
local CHUNK = 1000
local symbols = redis.call('SMEMBERS', KEYS[6])
local positions = 0
for first = 1, #symbols, CHUNK do
  local keys = {}
  for i = first, math.min(first + CHUNK - 1, #symbols) do
    keys[#keys + 1] = ARGV[1] .. symbols[i]
  end
  local strings = 0
  for _, value in ipairs(redis.call('MGET', unpack(keys))) do
    if value then
      strings = strings + 1
    end
  end
  if redis.call('EXISTS', unpack(keys)) > strings then
    return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
  end
  positions = positions + strings
end
-- A missing key reads as false, which becomes a nil reply (a nil would end the table).
return {
  redis.call('GET', KEYS[1]),
  redis.call('PTTL', KEYS[1]),
  redis.call('GET', KEYS[2]),
  redis.call('GET', KEYS[3]),
  redis.call('GET', KEYS[4]),
  redis.call('ZRANGEBYSCORE', KEYS[5], ARGV[2], '+inf'),
  positions,
}
