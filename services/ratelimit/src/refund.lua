-- Gives back units granted to tasks that were not assigned after all, while the window
-- they were taken in lasts (a later window started full anyway).
--
-- KEYS: the buckets. ARGV: per key, units then the time they were granted (ms).
for i = 1, #KEYS do
  local units, at = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 't', 'w', 'l')
  local t, w, l = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  if t ~= nil and w ~= nil and w <= at then
    redis.call('HSET', KEYS[i], 't', math.min(l, t + units))
  end
end
return 0
