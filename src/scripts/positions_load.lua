-- Reads every position of a bot atomically through its symbol index, never scanning the
-- keyspace. Cluster engines and some managed services refuse a key a script did not declare,
-- so the caller declares the position keys it expects; when the index holds a symbol whose
-- key is not among them (added since the caller learnt the index), nothing is read and the
-- index's members come back for the caller to call again with their keys. The values are
-- read with MGET in chunks (one command per chunk rather than one GET per position: unpack()
-- and the Lua stack take a few thousand arguments at most).
-- KEYS[1] positions index, KEYS[2..] position keys
-- ARGV[1] how many of the symbols are extra: found at start-up, not indexed yet, read whether
-- indexed or not; ARGV[i] (i >= 2) the symbol of KEYS[i], the extra symbols first. Symbols
-- declared but not in the index and not extra are not read.
-- Returns {1, members, pairs}: pairs is a flat array symbol, value, symbol, value, ... of the
-- positions that exist among the index's members and the extra symbols. {0, members} when a
-- member's key was not declared. A WRONGTYPE error when a position key holds another Redis
-- type.
local CHUNK = 1000
local members = redis.call('SMEMBERS', KEYS[1])
local key_of = {}
for i = 2, #KEYS do
  key_of[ARGV[i]] = i
end
for _, symbol in ipairs(members) do
  if not key_of[symbol] then
    return {0, members}
  end
end
-- The KEYS index of each position to read: the members, then the extra symbols not among
-- them, each once.
local wanted = {}
local chosen = {}
for _, symbol in ipairs(members) do
  chosen[symbol] = true
  wanted[#wanted + 1] = key_of[symbol]
end
for i = 2, tonumber(ARGV[1]) + 1 do
  if not chosen[ARGV[i]] then
    chosen[ARGV[i]] = true
    wanted[#wanted + 1] = i
  end
end
local out = {}
for first = 1, #wanted, CHUNK do
  local keys = {}
  for i = first, math.min(first + CHUNK - 1, #wanted) do
    keys[#keys + 1] = KEYS[wanted[i]]
  end
  local values = redis.call('MGET', unpack(keys))
  for i = 1, #values do
    if values[i] then
      out[#out + 1] = ARGV[wanted[first + i - 1]]
      out[#out + 1] = values[i]
    elseif redis.call('TYPE', keys[i]).ok ~= 'none' then
      -- MGET reads a key of another type as missing; GET would refuse it: say so.
      return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
    end
  end
end
return {1, members, out}
