-- Applies a batch of position changes atomically, fenced by the lease token, each change
-- guarded by what the caller last read (compare-and-set), and optionally recording a fill id
-- so that a fill delivered twice is applied once.
-- KEYS[1] primary_lock, KEYS[2] positions index, KEYS[3] fills, KEYS[4..] position keys
-- ARGV[1] token, ARGV[2] position ttl (ms), ARGV[3] fill member or '', ARGV[4] now (unix ms)
-- then for the i-th position key, three values from ARGV[5 + 3 * (i - 1)]:
--   symbol; expected: '*' anything, '-' absent, '=' .. value exactly; new: '-' delete, '+' .. value
-- Returns {'ok', changed}, {'conflict', symbol} or {'duplicate', 0}.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTPRIMARY this instance does not hold the primary lease')
end
local ttl = ARGV[2]
local fill = ARGV[3]
if fill ~= '' and redis.call('ZSCORE', KEYS[3], fill) then
  return {'duplicate', 0}
end
local count = #KEYS - 3
for i = 1, count do
  local base = 5 + 3 * (i - 1)
  local expected = ARGV[base + 1]
  if expected ~= '*' then
    local current = redis.call('GET', KEYS[3 + i])
    if expected == '-' then
      if current then return {'conflict', ARGV[base]} end
    elseif current ~= string.sub(expected, 2) then
      return {'conflict', ARGV[base]}
    end
  end
end
local changed = 0
for i = 1, count do
  local base = 5 + 3 * (i - 1)
  local symbol, new = ARGV[base], ARGV[base + 2]
  if new == '-' then
    changed = changed + redis.call('DEL', KEYS[3 + i])
    redis.call('SREM', KEYS[2], symbol)
  else
    redis.call('SET', KEYS[3 + i], string.sub(new, 2), 'PX', ttl)
    redis.call('SADD', KEYS[2], symbol)
    changed = changed + 1
  end
end
-- The index outlives every position it names: each position write pushes its expiry out.
redis.call('PEXPIRE', KEYS[2], ttl)
if fill ~= '' then
  local now = tonumber(ARGV[4])
  redis.call('ZADD', KEYS[3], now, fill)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ttl))
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return {'ok', changed}
