-- Shared by the cache's scripts (prepended to each). Names are those of
-- scalekit/cache/_redis.py: '<ns>:{<h>}:<kind>:<key>', kind v (value), l (lease),
-- f (fence), t (a tag's set of value names). A key's value, lease and fence share
-- the hash tag {<h>}, so one script touches them on one Redis Cluster slot.
-- Every read of a key the cache does not trust (a value or fence someone else may
-- have written) goes through redis.pcall: a wrong-typed key is replaced, never a
-- script error.

-- Move a fence (if it exists: no fence, no fill registered) so that fills which
-- read it will not store. A fence that is not a counter is dropped (same effect:
-- a fill stores only if its fence still exists with the value it read).
local function bump(fence, ms)
  if redis.call('EXISTS', fence) == 1 then
    if type(redis.pcall('INCR', fence)) == 'table' then
      redis.call('DEL', fence)
    else
      redis.call('PEXPIRE', fence, ms)
    end
  end
end

-- Add a value name to a tag set that lives at least ms from now.
local function join(set, member, ms)
  if type(redis.pcall('SADD', set, member)) == 'table' then
    redis.call('DEL', set)
    redis.call('SADD', set, member)
  end
  if redis.call('PTTL', set) < ms then
    redis.call('PEXPIRE', set, ms)
  end
end

-- The fence and lease names of a value name of this namespace ('<ns>:{' = head).
local function derive(value, head)
  if string.sub(value, 1, #head) ~= head then
    return nil
  end
  local close = string.find(value, '}', #head + 1, true)
  if not close or string.sub(value, close + 1, close + 3) ~= ':v:' then
    return nil
  end
  local base, rest = string.sub(value, 1, close), string.sub(value, close + 4)
  return base .. ':f:' .. rest, base .. ':l:' .. rest
end
