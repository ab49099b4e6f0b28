-- policy-extras.listener_domains: get_listener_domain answers from TOML (or
-- JSON) files. Written for Hermod from the documented behaviour of
-- KumoMTA's helper:
--
--   ["*"]                          the default for every domain without an
--   log_oob = true                 entry of its own
--
--   ["example.com"]                any kumo.make_listener_domain option
--   relay_to = true
--
--   ["*.example.com"]              any subdomain of example.com (not
--   log_arf = "LogThenDrop"        example.com itself) without an entry
--
--   [listener."127.0.0.1:25"."*.example.com"]
--   log_oob = false                on that listener only, over the above
--
-- A domain takes its exact entry, else the most specific wildcard, else
-- "*". On a listener with a section of its own, the section's matching
-- entry (same rules) is laid over that, key by key. Later files override
-- earlier ones key by key. relay_from_authz (SMTP AUTH identities that may
-- relay with this sender domain) is passed to make_listener_domain, which
-- Hermod extends with it.
--
--   kumo.on('get_listener_domain', listener_domains:setup { files })
--
-- The files are read and checked when the policy loads: a misspelt option
-- or a bad value is reported as file:line by `hermod check`.
local kumo = require 'kumo'
local utils = require 'policy-extras.policy_utils'

local M = {}

-- Check one section's options; the error names the line of the bad key.
local function check(file, where, params)
  if type(params) ~= 'table' then
    utils.file_error(file, where, string.format("'%s' must be a table of make_listener_domain options", where))
  end
  local ok, err = pcall(kumo.make_listener_domain, params)
  if ok then
    return
  end
  local bad = tostring(err):match 'unknown field `([^`]+)`'
  if not bad then
    -- A bad value: find the key whose value make_listener_domain refuses.
    for k, v in pairs(params) do
      if not pcall(kumo.make_listener_domain, { [k] = v }) then
        bad = k
        break
      end
    end
  end
  utils.file_error(file, bad or where, string.format("'%s': %s", where, utils.error_reason(err)))
end

local function merge_domains(file, into, domains, where_prefix)
  for domain, params in pairs(domains) do
    local where = where_prefix .. domain
    check(file, where, params)
    local name = domain:lower()
    into[name] = utils.merge_into(params, into[name] or {})
  end
end

local function load(files)
  local data = { general = {}, by_listener = {} }
  for _, file in ipairs(files) do
    local loaded = utils.load_json_or_toml_file(file)
    if type(loaded) ~= 'table' then
      utils.file_error(file, nil, 'expected a table of domains')
    end
    for key, value in pairs(loaded) do
      if key ~= 'listener' then
        merge_domains(file, data.general, { [key] = value }, '')
      end
    end
    local listeners = loaded.listener or {}
    if type(listeners) ~= 'table' then
      utils.file_error(file, 'listener', "'listener' must be a table of listener addresses")
    end
    for listener, domains in pairs(listeners) do
      if type(domains) ~= 'table' then
        utils.file_error(file, listener, string.format("listener '%s' must be a table of domains", listener))
      end
      data.by_listener[listener] = data.by_listener[listener] or {}
      merge_domains(file, data.by_listener[listener], domains, string.format('listener %s: ', listener))
    end
  end
  return data
end

-- The entry of `entries` for `domain`: exact, then '*.<parent>' from the
-- nearest parent up, then '*'.
local function match(entries, domain)
  if entries[domain] then
    return entries[domain]
  end
  local parent = domain:match '^[^.]*%.(.+)$'
  while parent do
    local wild = entries['*.' .. parent]
    if wild then
      return wild
    end
    parent = parent:match '^[^.]*%.(.+)$'
  end
  return entries['*']
end

local configured = false

-- Answers built per context, so a busy domain does not rebuild its
-- userdata on every connection. Bounded: domains come from clients.
local CACHE_LIMIT = 1024

function M:setup(files)
  if configured then
    error('policy-extras.listener_domains: setup was already called', 2)
  end
  if type(files) ~= 'table' then
    error('policy-extras.listener_domains: setup expects a list of file names', 2)
  end
  configured = true
  local data = load(files)
  local cache, cached = {}, 0
  return function(domain, listener, _conn_meta)
    domain = (domain or ''):lower()
    local key = tostring(listener) .. '\0' .. domain
    local hit = cache[key]
    if hit ~= nil then
      return hit or nil
    end
    local base = match(data.general, domain)
    local per_listener = data.by_listener[listener]
    local over = per_listener and match(per_listener, domain)
    local answer = false
    if base or over then
      local params = utils.merge_into(base, {})
      utils.merge_into(over, params)
      answer = kumo.make_listener_domain(params)
    end
    if cached >= CACHE_LIMIT then
      cache, cached = {}, 0
    end
    cache[key], cached = answer, cached + 1
    return answer or nil
  end
end

return M
