-- A bot's status for operators (quantshift-state status, watch, metrics) in one atomic,
-- read-only call: the lease, epoch, heartbeat, state, live instances, the holder's last
-- renewal, the instances' stall meter summaries and the number of positions belong to one
-- moment, and to the server's clock. Never writes, never scans.
-- Cluster engines and some managed services refuse a key a script did not declare, so the
-- caller declares the position keys it expects; when the index holds a symbol whose key is
-- not among them, nothing else is read and the index's members come back for the caller to
-- call again with their keys.
-- KEYS[1] lease  KEYS[2] epoch  KEYS[3] heartbeat  KEYS[4] state  KEYS[5] instances
-- KEYS[6] positions index  KEYS[7] lease record  KEYS[8] lease stalls, KEYS[9..] position keys
-- ARGV[i - 8] the symbol of KEYS[i] (i >= 9)
-- Returns {1, lease holder token, lease PTTL, epoch, heartbeat, state, live instances,
-- positions, server time (ms), {record token, renewed_at, deadline_ms}, stall summaries
-- (HGETALL)}, or {0, members} when a member's key was not declared. Live instances are those
-- whose presence score (server ms until which they count as live) is above the server's time
-- now. The positions are the index's symbols whose key exists, read in chunks (unpack() and
-- the Lua stack take a few thousand arguments at most). A WRONGTYPE error when a position key
-- holds another Redis type, as loading the positions would: MGET reads such a key as missing,
-- EXISTS counts it.
local CHUNK = 1000
local FIRST_POSITION = 9
local members = redis.call('SMEMBERS', KEYS[6])
local key_of = {}
for i = FIRST_POSITION, #KEYS do
  key_of[ARGV[i - 8]] = KEYS[i]
end
for _, symbol in ipairs(members) do
  if not key_of[symbol] then
    return {0, members}
  end
end
local positions = 0
for first = 1, #members, CHUNK do
  local keys = {}
  for i = first, math.min(first + CHUNK - 1, #members) do
    keys[#keys + 1] = key_of[members[i]]
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
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local now_text = string.format('%.0f', now)
-- A missing key reads as false, which becomes a nil reply (a nil would end the table).
return {
  1,
  redis.call('GET', KEYS[1]),
  redis.call('PTTL', KEYS[1]),
  redis.call('GET', KEYS[2]),
  redis.call('GET', KEYS[3]),
  redis.call('GET', KEYS[4]),
  redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. now_text, '+inf'),
  positions,
  now,
  redis.call('HMGET', KEYS[7], 'token', 'renewed_at', 'deadline_ms'),
  redis.call('HGETALL', KEYS[8]),
}
