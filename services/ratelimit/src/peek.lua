-- Reads buckets without changing them (acquire.lua writes them): per key, in order,
-- {units left, start of its window (ms), the limit it was filled to}, or {} for a key
-- with no bucket.
--
-- KEYS: the buckets.
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 't', 'w', 'l')
  if v[1] and v[2] and v[3] then
    out[i] = { tonumber(v[1]), tonumber(v[2]), tonumber(v[3]) }
  else
    out[i] = {}
  end
end
return out
