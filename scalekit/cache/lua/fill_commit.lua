-- Store a value: a fill (checked against its fences) or a direct write.
-- KEYS: [1] value key, [2] lease key, [3 .. 2+nf] fence keys (KEYS[3]: the key's
--       own fence), then tag set keys.
-- ARGV: [1] mode: 'fill' or 'set', [2] lease token, [3] value, [4] value ttl (ms),
--       [5] nf, [6] fence ttl (ms), [7] age of the fill (ms), then nf fence values
--       read by begin_fill (mode 'fill').
-- A fill stores only if every fence still holds the value it read and it is
-- younger than the fence ttl (an older fill could have outlived a fence key).
-- A direct write moves the key's fence: fills of the key in progress will not
-- store over it. Reply: 1 stored, 0 refused.
local nf = tonumber(ARGV[5])
local fence_ms = tonumber(ARGV[6])
local ok = true
if ARGV[1] == 'fill' then
  if tonumber(ARGV[7]) >= fence_ms then
    ok = false
  else
    for i = 1, nf do
      if (redis.call('GET', KEYS[2 + i]) or '0') ~= ARGV[7 + i] then
        ok = false
        break
      end
    end
  end
else
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], fence_ms)
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
if not ok then
  return 0
end
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
for i = 3 + nf, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
