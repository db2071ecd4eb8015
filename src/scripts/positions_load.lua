-- Reads every position of a bot atomically through its symbol index, never scanning the
-- keyspace; symbols found at start-up that are not indexed yet come in ARGV. The values are
-- read with MGET in chunks (one command per chunk rather than one GET per position: unpack()
-- and the Lua stack take a few thousand arguments at most).
-- KEYS[1] positions index
-- ARGV[1] position key prefix, ARGV[2..] extra symbols
-- Returns {n, symbols, pairs}: the index's members are symbols[1..n] (the rest are the extra
-- symbols not in it), pairs is a flat array symbol, value, symbol, value, ... of the positions
-- that exist. A WRONGTYPE error when a position key holds another Redis type.
local CHUNK = 1000
local symbols = redis.call('SMEMBERS', KEYS[1])
local indexed = #symbols
local seen = {}
for _, symbol in ipairs(symbols) do
  seen[symbol] = true
end
for i = 2, #ARGV do
  if not seen[ARGV[i]] then
    seen[ARGV[i]] = true
    symbols[#symbols + 1] = ARGV[i]
  end
end
local out = {}
for first = 1, #symbols, CHUNK do
  local last = math.min(first + CHUNK - 1, #symbols)
  local keys = {}
  for i = first, last do
    keys[#keys + 1] = ARGV[1] .. symbols[i]
  end
  local values = redis.call('MGET', unpack(keys))
  for i = 1, #values do
    if values[i] then
      out[#out + 1] = symbols[first + i - 1]
      out[#out + 1] = values[i]
    elseif redis.call('TYPE', keys[i]).ok ~= 'none' then
      -- MGET reads a key of another type as missing; GET would refuse it: say so.
      return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
    end
  end
end
return {indexed, symbols, out}
