-- A tag's set on Redis Cluster, where it lives in its own slot.
-- KEYS: [1] the tag set. ARGV: [1] 'join' or 'take', [2] value name (join),
--       [3] ttl (ms, join).
-- join: add the value name; the set lives at least ttl from now. Reply: 1.
-- take: the members, and the set dropped (atomically). Reply: the members.
if ARGV[1] == 'take' then
  local members = redis.pcall('SMEMBERS', KEYS[1])
  redis.call('DEL', KEYS[1])
  if type(members) == 'table' and members.err == nil then
    return members
  end
  return {}
end
join(KEYS[1], ARGV[2], tonumber(ARGV[3]))
return 1
