-- Writes one value only while the caller holds the lease (docs/contract.md §3).
-- KEYS[1] primary_lock, KEYS[2] the key to write
-- ARGV[1] token, ARGV[2] value, ARGV[3] ttl (ms)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTPRIMARY this instance does not hold the primary lease')
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
