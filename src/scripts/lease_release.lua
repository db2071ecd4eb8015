-- Gives the lease up only if it is still the caller's: the record says released (a new
-- renewal count makes this release unique) and the lock key goes, then waiting standbys
-- are told. A released record is taken at once, so only a primary gives one (src/lease/).
-- With ARGV[4] '1' only the lock key goes, if it carries the token: what a retired token
-- (past its deadline, or refused) frees, the record left for the take-over wait.
-- KEYS[1] primary_lock, KEYS[2] lease record
-- ARGV[1] token, ARGV[2] release channel (empty: no notice), ARGV[3] message, ARGV[4] '1':
-- the lock key only
-- Returns 1 when released, 0 when the lease was no longer the caller's.
local released = 0
if ARGV[4] ~= '1' and redis.call('HGET', KEYS[2], 'token') == ARGV[1] then
  redis.call('HSET', KEYS[2], 'token', '')
  redis.call('HINCRBY', KEYS[2], 'seq', 1)
  released = 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
if released == 1 and ARGV[2] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return released
