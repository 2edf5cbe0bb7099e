-- Store a value: a fill (checked against its fence) or a direct write.
-- KEYS: [1] value, [2] lease, [3] fence, [4..] tag sets (on Redis Cluster none:
--       the client joins them first, in their own slots).
-- ARGV: [1] mode: 'fill' or 'set', [2] lease token ('' for none), [3] value,
--       [4] value ttl (ms), [5] fence ttl (ms), [6] age of the fill (ms),
--       [7] the fence value begin_fill read (mode 'fill').
-- A fill stores only if its fence still exists with the value it read (no
-- invalidation moved or dropped it) and it is younger than the fence ttl. A direct
-- write moves the fence: fills of the key in progress will not store over it.
-- Reply: 1 stored, 0 refused.
local fence_ms = tonumber(ARGV[5])
local ok = true
if ARGV[1] == 'fill' then
  ok = tonumber(ARGV[6]) < fence_ms and redis.pcall('GET', KEYS[3]) == ARGV[7]
else
  bump(KEYS[3], fence_ms)
end
if ARGV[2] ~= '' and redis.pcall('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
if not ok then
  return 0
end
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
for i = 4, #KEYS do
  join(KEYS[i], KEYS[1], ttl)
end
return 1
