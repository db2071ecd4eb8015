-- Reads every position of a bot in one round trip through its symbol index, never scanning
-- the keyspace; symbols found at start-up that are not indexed yet come in ARGV.
-- KEYS[1] positions index
-- ARGV[1] position key prefix, ARGV[2..] extra symbols
-- Returns a flat array symbol, value, symbol, value, ... of the positions that exist.
local symbols = redis.call('SMEMBERS', KEYS[1])
for i = 2, #ARGV do
  symbols[#symbols + 1] = ARGV[i]
end
local seen, out = {}, {}
for _, symbol in ipairs(symbols) do
  if not seen[symbol] then
    seen[symbol] = true
    local value = redis.call('GET', ARGV[1] .. symbol)
    if value then
      out[#out + 1] = symbol
      out[#out + 1] = value
    end
  end
end
return out
