-- Give a fill lease back without storing (the load failed or must not be cached).
-- KEYS: [1] lease key. ARGV: [1] this caller's token.
-- Deletes the lease only if it is still this caller's. Reply: 1 released, 0 not held.
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
