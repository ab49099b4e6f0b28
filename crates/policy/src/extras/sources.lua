-- policy-extras.sources: egress sources and pools from TOML (or JSON) files.
-- Written for Hermod from the documented behaviour of KumoMTA's helper:
--
--   [source."ip-1"]                  any kumo.make_egress_source option
--   source_address = "10.0.0.1"
--   ehlo_domain = "mta1.example.com"
--
--   [pool."pool-1"."ip-1"]           a pool entry; weight defaults to 1
--   weight = 2
--
-- sources:setup { files } answers get_egress_source and get_egress_pool.
-- Files are read and checked when the policy loads, so a misspelt option
-- or a pool naming an undefined source is reported as file:line by
-- `hermod check` and stops `hermod serve` before it accepts mail.
local kumo = require 'kumo'
local utils = require 'policy-extras.policy_utils'

local M = {}

local function load(files)
  local sources, pools = {}, {}
  -- Where each source and pool entry was defined, for errors.
  local origin = {}
  for _, file in ipairs(files) do
    local data = utils.load_json_or_toml_file(file)
    for key in pairs(data) do
      if key ~= 'source' and key ~= 'pool' then
        utils.file_error(file, key, string.format("unknown key '%s': expected [source.<name>] or [pool.<name>]", key))
      end
    end
    for name, params in pairs(data.source or {}) do
      if type(params) ~= 'table' then
        utils.file_error(file, name, string.format("source '%s' must be a table of make_egress_source options", name))
      end
      local merged = sources[name] or { name = name }
      utils.merge_into(params, merged)
      merged.name = name
      local ok, err = pcall(kumo.make_egress_source, merged)
      if not ok then
        local bad = tostring(err):match 'unknown field `([^`]+)`' or name
        utils.file_error(file, bad, string.format("source '%s': %s", name, utils.error_reason(err)))
      end
      sources[name] = merged
      origin[name] = file
    end
    for pool, entries in pairs(data.pool or {}) do
      if type(entries) ~= 'table' then
        utils.file_error(file, pool, string.format("pool '%s' must be a table of sources", pool))
      end
      local def = pools[pool] or { name = pool, entries = {} }
      for source, entry in pairs(entries) do
        if type(entry) ~= 'table' then
          utils.file_error(file, source, string.format("pool '%s': entry '%s' must be a table", pool, source))
        end
        for k in pairs(entry) do
          if k ~= 'weight' then
            utils.file_error(file, k, string.format("pool '%s', source '%s': unknown key '%s' (only weight)", pool, source, k))
          end
        end
        table.insert(def.entries, { name = source, weight = entry.weight })
        origin[pool .. '\0' .. source] = file
      end
      pools[pool] = def
    end
  end
  for pool, def in pairs(pools) do
    -- Deterministic order: TOML tables have none.
    table.sort(def.entries, function(a, b)
      return a.name < b.name
    end)
    for _, entry in ipairs(def.entries) do
      if not sources[entry.name] then
        utils.file_error(
          origin[pool .. '\0' .. entry.name],
          entry.name,
          string.format("pool '%s' names source '%s', which no [source.%s] defines", pool, entry.name, entry.name)
        )
      end
    end
    local ok, err = pcall(kumo.make_egress_pool, def)
    if not ok then
      utils.file_error(origin[pool .. '\0' .. def.entries[1].name], pool, string.format("pool '%s': %s", pool, utils.error_reason(err)))
    end
  end
  return sources, pools
end

local configured = false

function M:setup(files)
  if configured then
    error('policy-extras.sources: setup was already called', 2)
  end
  if type(files) ~= 'table' then
    error('policy-extras.sources: setup expects a list of file names', 2)
  end
  configured = true
  local sources, pools = load(files)
  -- For other helpers' checks (shaping's sources tables name sources).
  function M.is_defined(name)
    return sources[name] ~= nil
  end
  -- A name the files do not define is declined (nil): the built-in
  -- 'unspecified' pool and source keep working, and an unknown pool is
  -- reported by the queue that asked for it.
  kumo.on('get_egress_source', function(name)
    local params = sources[name]
    return params and kumo.make_egress_source(params)
  end)
  kumo.on('get_egress_pool', function(name)
    local def = pools[name]
    return def and kumo.make_egress_pool(def)
  end)
end

return M
