-- Adds positions written before the index existed (by the predecessor library) to the index.
-- KEYS[1] primary_lock, KEYS[2] positions index, KEYS[3..] position keys: every key touched
-- is declared (cluster engines and some managed services refuse any other)
-- ARGV[1] token, ARGV[2] index ttl (ms), ARGV[i] (i >= 3) the symbol of KEYS[i]
-- Returns how many symbols were added.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTPRIMARY this instance does not hold the primary lease')
end
local added = 0
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    added = added + redis.call('SADD', KEYS[2], ARGV[i])
  end
end
if added > 0 then
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return added
