-- A tag's set on Redis Cluster, where it lives in its own slot.
-- KEYS: [1] the tag set. ARGV: [1] 'join', 'extend' or 'take', [2] value name
--       (join, extend), [3] ttl (ms; join, extend).
-- join: add the value name; the set lives at least ttl from now. Reply: 1.
-- extend: the same, only if the set exists (a fill's commit: the fill joined it at
--   its begin; a set that is gone was taken by an invalidation, which moved the
--   fill's fence: the commit will be refused). Reply: 1 done, 0 no set.
-- take: the members, and the set dropped (atomically). Reply: the members.
if ARGV[1] == 'take' then
  local members = redis.pcall('SMEMBERS', KEYS[1])
  redis.call('DEL', KEYS[1])
  if type(members) == 'table' and members.err == nil then
    return members
  end
  return {}
end
if ARGV[1] == 'extend' and redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
join(KEYS[1], ARGV[2], tonumber(ARGV[3]))
return 1
