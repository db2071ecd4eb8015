-- Gives the lease up only if it is still ours, then tells waiting standbys at once.
-- KEYS[1] primary_lock
-- ARGV[1] token, ARGV[2] release channel (empty: no notice), ARGV[3] message
-- Returns 1 when released, 0 when the lease was no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] ~= '' then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
  return 1
end
return 0
