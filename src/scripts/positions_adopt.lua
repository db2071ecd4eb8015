-- Adds positions written before the index existed (by the predecessor library) to the index.
-- KEYS[1] primary_lock, KEYS[2] positions index
-- ARGV[1] token, ARGV[2] position key prefix, ARGV[3] index ttl (ms), ARGV[4..] symbols
-- Returns how many symbols were added.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTPRIMARY this instance does not hold the primary lease')
end
local added = 0
for i = 4, #ARGV do
  if redis.call('EXISTS', ARGV[2] .. ARGV[i]) == 1 then
    added = added + redis.call('SADD', KEYS[2], ARGV[i])
  end
end
if added > 0 then
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
end
return added
