-- policy-extras.shaping: traffic shaping rules from TOML (or JSON) files,
-- answering get_egress_path_config. Written for Hermod from the documented
-- behaviour and file format of KumoMTA's helper (its user guide's traffic
-- shaping chapter):
--
--   ["default"]                          options for every egress path
--   connection_limit = 10
--   ["yahoo.com"]                        options for every domain whose MX
--   max_deliveries_per_connection = 20   hosts are yahoo.com's (mx_rollup)
--   ["foo.com"]                          options for foo.com alone
--   mx_rollup = false
--   ["foo.com".sources."ip-1"]           ... and for its mail through ip-1
--   [provider."google"]                  domains whose MX hosts all end in a
--   match = [{MXSuffix=".google.com"}]   suffix ({HostName=...}: are named),
--                                        or whose name ends in
--                                        {DomainSuffix=...}
--   [[provider."google".automation]]     automation rules: checked, unused
--
-- Options are make_egress_path's. Files merge in order, key by key; a table
-- with replace_base = true drops what earlier files said for it and, when it
-- applies to a path, what was merged before it. For a path (domain, source,
-- site) the order is: default, the matching providers (in the order they
-- are written), their sources tables, the tables of domains whose MX hosts
-- make the site, the domain's own (mx_rollup = false) table, the site's
-- sources tables, the domain's sources table.
--
-- Unlike KumoMTA's helper, the files are read and checked when the policy
-- loads, so a misspelt option stops the policy (and `hermod check`) with
-- the data file's line. Traffic shaping automation (KumoMTA's TSA daemon)
-- is not available in Hermod: automation rules are checked and ignored, and
-- setup_publish logs that. provider_connection_limit and
-- provider_max_message_rate (limits shared by every site of a provider) are
-- refused until Hermod has shared limits.
local kumo = require 'kumo'
local utils = require 'policy-extras.policy_utils'

local M = {}

-- KumoMTA's own rules file, which its helper always loads first; used
-- when it exists (Hermod installs none).
local DEFAULT_FILE = '/opt/kumomta/share/policy-extras/shaping.toml'

local PROVIDER_NOT_YET = {
  provider_connection_limit = true,
  provider_max_message_rate = true,
  provider_source_selection_rate = true,
}

local AUTOMATION_KEYS = { regex = true, action = true, trigger = true, duration = true, match_internal = true }
local ACTIONS = {
  Suspend = true,
  SuspendTenant = true,
  SuspendCampaign = true,
  Bounce = true,
  BounceTenant = true,
  BounceCampaign = true,
}
local MATCH_KINDS = { DomainSuffix = true, MXSuffix = true, HostName = true }

-- setup_with_automation's documented options; the automation ones are
-- accepted for compatibility and have no effect.
local SETUP_OPTIONS = {
  publish = true,
  subscribe = true,
  extra_files = true,
  no_default_files = true,
  cache_ttl = true,
  back_pressure = true,
  tsa_queue_config = true,
  load_validation_options = true,
  validation_options = true,
  pre_filter = true,
  skip_log_record_types = true,
  additional_skip_log_record_types = true,
  retry_shaping_data_fetch_on_populate_timeout = true,
  shaping_data_populate_timeout = true,
  allow_stale_shaping_data = true,
}

local function copy(v)
  if type(v) ~= 'table' then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    out[k] = copy(x)
  end
  return out
end

local function append(path, ...)
  local out = copy(path)
  for _, part in ipairs { ... } do
    table.insert(out, part)
  end
  return out
end

-- Raise `message` at the line of `key` in the table `path` of the file
-- being read (`src`: its name and layout).
local function fail(src, path, key, message, nth)
  local line = src.layout:line(path, key, nth) or utils.key_line(src.file, key or path[#path])
  utils.error_at(src.file, line, message)
end

-- Each option alone (so the error names its line), then all of them
-- together, through make_egress_path.
local function check_options(src, path, where, options)
  for key, value in pairs(options) do
    local ok, err = pcall(kumo.make_egress_path, { [key] = value })
    if not ok then
      local reason = utils.error_reason(err)
      if tostring(err):find('unknown field', 1, true) then
        reason = string.format("unknown key '%s' (not a make_egress_path option)", key)
        if #path == 1 and not path[1]:find('.', 1, true) and type(value) == 'table' then
          reason = string.format(
            '%s; quote domain names in table headers, as ["%s.%s"]: unquoted, the dot makes a nested table',
            reason,
            path[1],
            key
          )
        end
      end
      fail(src, path, key, string.format('%s: %s', where, reason))
    end
  end
  local ok, err = pcall(kumo.make_egress_path, options)
  if not ok then
    fail(src, path, nil, string.format('%s: %s', where, utils.error_reason(err)))
  end
end

local function check_action(src, path, nth, where, action)
  if type(action) == 'string' then
    if ACTIONS[action] then
      return
    end
  elseif type(action) == 'table' then
    local set = action.SetConfig or action.SetDomainConfig
    if #action > 0 then
      for _, a in ipairs(action) do
        check_action(src, path, nth, where, a)
      end
      return
    end
    if type(set) == 'table' and type(set.name) == 'string' and set.value ~= nil then
      return
    end
  end
  fail(
    src,
    path,
    'action',
    string.format(
      "%s: 'action' must be one of Suspend, SuspendTenant, SuspendCampaign, Bounce, BounceTenant, BounceCampaign, {SetConfig={name=, value=}}, {SetDomainConfig={name=, value=}}, or a list of them",
      where
    ),
    nth
  )
end

-- Automation rules are kept to KumoMTA's documented shape (Hermod does
-- not act on them).
local function check_automation(src, path, where, rules)
  local rpath = append(path, 'automation')
  if type(rules) ~= 'table' then
    fail(src, path, 'automation', where .. ': automation must be a list of rules')
  end
  for i, rule in ipairs(rules) do
    local rwhere = string.format('%s, automation rule %d', where, i)
    local function bad(key, message)
      local line = src.layout:line(rpath, key, i)
      if not line then
        return fail(src, path, 'automation', rwhere .. ': ' .. message)
      end
      utils.error_at(src.file, line, rwhere .. ': ' .. message)
    end
    if type(rule) ~= 'table' then
      bad(nil, 'must be a table')
    end
    for key in pairs(rule) do
      if not AUTOMATION_KEYS[key] then
        bad(key, string.format("unknown key '%s' (regex, action, trigger, duration, match_internal)", key))
      end
    end
    local regex = rule.regex
    local regex_ok = type(regex) == 'string' or (type(regex) == 'table' and #regex > 0)
    for _, r in ipairs(type(regex) == 'table' and regex or {}) do
      regex_ok = regex_ok and type(r) == 'string'
    end
    if not regex_ok then
      bad('regex', "'regex' must be a string or a list of strings")
    end
    if rule.action == nil then
      bad(nil, "'action' is required")
    end
    check_action(src, rpath, i, rwhere, rule.action)
    if type(rule.duration) ~= 'string' then
      bad('duration', "'duration' must be a string such as \"2 hours\"")
    end
    local trigger = rule.trigger
    if
      trigger ~= nil
      and trigger ~= 'Immediate'
      and not (type(trigger) == 'table' and type(trigger.Threshold) == 'string')
    then
      bad('trigger', "'trigger' must be \"Immediate\" or {Threshold=\"10/hr\"}")
    end
    if rule.match_internal ~= nil and type(rule.match_internal) ~= 'boolean' then
      bad('match_internal', "'match_internal' must be true or false")
    end
  end
end

local function check_match(src, path, where, list)
  local out = {}
  local ok = type(list) == 'table'
  for _, rule in ipairs(ok and list or {}) do
    local kind, value = next(type(rule) == 'table' and rule or {})
    if not MATCH_KINDS[kind] or type(value) ~= 'string' or next(rule, kind) ~= nil then
      ok = false
      break
    end
    table.insert(out, { [kind] = value:lower() })
  end
  if not ok then
    fail(
      src,
      path,
      'match',
      where .. ": 'match' must be a list of {DomainSuffix=\"...\"}, {MXSuffix=\"...\"} or {HostName=\"...\"}"
    )
  end
  return out
end

-- One domain's or provider's table as one file writes it.
local function read_block(src, path, where, block, is_provider)
  if type(block) ~= 'table' then
    fail(src, path, nil, where .. ' must be a table of make_egress_path options')
  end
  local entry = { options = {}, sources = {}, replace_base = false, mx_rollup = true, match = {} }
  for key, value in pairs(block) do
    if key == 'replace_base' or (key == 'mx_rollup' and not is_provider) then
      if type(value) ~= 'boolean' then
        fail(src, path, key, string.format("%s: '%s' must be true or false", where, key))
      end
      entry[key] = value
    elseif key == 'sources' then
      if type(value) ~= 'table' then
        fail(src, path, key, where .. ': sources must be a table of source names')
      end
      for source, options in pairs(value) do
        local spath = append(path, 'sources', source)
        local swhere = string.format("%s, source '%s'", where, source)
        if type(options) ~= 'table' then
          fail(src, spath, nil, swhere .. ' must be a table of make_egress_path options')
        end
        check_options(src, spath, swhere, options)
        entry.sources[source] = options
        table.insert(src.refs, { source = source, file = src.file, line = src.layout:line(spath) })
      end
    elseif key == 'automation' then
      check_automation(src, path, where, value)
    elseif is_provider and key == 'match' then
      entry.match = check_match(src, path, where, value)
    elseif is_provider and PROVIDER_NOT_YET[key] then
      fail(
        src,
        path,
        key,
        string.format(
          "%s: '%s' is not supported by Hermod yet (a limit shared by every site of the provider)",
          where,
          key
        )
      )
    else
      entry.options[key] = value
    end
  end
  check_options(src, path, where, entry.options)
  return entry
end

-- `entry` laid over what earlier files said (`into`), or replacing it.
local function merge(into, entry)
  if not into or entry.replace_base then
    return copy(entry)
  end
  utils.merge_into(copy(entry.options), into.options)
  for source, options in pairs(entry.sources) do
    into.sources[source] = utils.merge_into(copy(options), into.sources[source] or {})
  end
  for _, rule in ipairs(entry.match) do
    table.insert(into.match, rule)
  end
  return into
end

-- The names of `tbl` in the order the file writes their tables.
local function written_order(src, tbl, prefix)
  local names = utils.table_keys(tbl)
  local line = {}
  for _, name in ipairs(names) do
    line[name] = src.layout:first_line(append(prefix, name)) or math.huge
  end
  table.sort(names, function(a, b)
    if line[a] ~= line[b] then
      return line[a] < line[b]
    end
    return a < b
  end)
  return names
end

local function load(files)
  local data = { rollup = {}, rollup_order = {}, exact = {}, providers = {}, provider_order = {}, refs = {} }
  for _, file in ipairs(files) do
    local src = { file = file, layout = utils.toml_layout(file), refs = data.refs }
    local raw = utils.load_json_or_toml_file(file)
    for _, name in ipairs(written_order(src, raw, {})) do
      local block = raw[name]
      if name == 'provider' then
        if type(block) ~= 'table' then
          fail(src, { name }, name, 'provider must be a table of [provider."<name>"] tables')
        end
        for _, pname in ipairs(written_order(src, block, { 'provider' })) do
          local entry = read_block(src, { 'provider', pname }, string.format("provider '%s'", pname), block[pname], true)
          if not data.providers[pname] then
            table.insert(data.provider_order, pname)
          end
          data.providers[pname] = merge(data.providers[pname], entry)
        end
      else
        if type(block) ~= 'table' then
          fail(src, { name }, name, string.format("'%s' must be a [\"<domain>\"] table (or [\"default\"])", name))
        end
        local entry = read_block(src, { name }, string.format("domain '%s'", name), block, false)
        local domain = name:lower()
        if domain == 'default' then
          data.default = merge(data.default, entry)
        elseif entry.mx_rollup then
          if not data.rollup[domain] then
            table.insert(data.rollup_order, domain)
          end
          data.rollup[domain] = merge(data.rollup[domain], entry)
        else
          data.exact[domain] = merge(data.exact[domain], entry)
        end
      end
    end
  end
  return data
end

local function lay(params, options, replace)
  if replace then
    params = {}
  end
  for k, v in pairs(options or {}) do
    params[k] = copy(v)
  end
  return params
end

local function is_domain_name(name)
  return name:match '^[%w_%-%.]+$' ~= nil
end

local function provider_matches(p, domain, mx_of)
  local need_mx = false
  for _, rule in ipairs(p.match) do
    if rule.DomainSuffix then
      if utils.ends_with(domain, rule.DomainSuffix) then
        return true
      end
    else
      need_mx = true
    end
  end
  local mx = need_mx and mx_of(domain)
  if not mx or #(mx.hosts or {}) == 0 then
    return false
  end
  -- Every MX host must match: a vanity domain that mixes providers is none of them.
  for _, host in ipairs(mx.hosts) do
    host = (host:lower():gsub('%.$', ''))
    local hit = false
    for _, rule in ipairs(p.match) do
      if (rule.MXSuffix and utils.ends_with(host, rule.MXSuffix)) or rule.HostName == host then
        hit = true
        break
      end
    end
    if not hit then
      return false
    end
  end
  return true
end

local function resolve(data, domain, source, site)
  domain = tostring(domain or ''):lower()
  local cache = {}
  -- A domain that does not resolve matches no provider and no site, as in
  -- KumoMTA (it may be routed by a smarthost or a custom protocol).
  local function mx_of(name)
    if cache[name] == nil then
      local ok, mx = false, nil
      if kumo.dns and kumo.dns.lookup_mx then
        ok, mx = pcall(kumo.dns.lookup_mx, name)
      end
      cache[name] = ok and mx or false
    end
    return cache[name] or nil
  end
  local params = lay({}, data.default and data.default.options)
  local providers = {}
  if is_domain_name(domain) then
    for _, name in ipairs(data.provider_order) do
      local p = data.providers[name]
      if provider_matches(p, domain, mx_of) then
        params = lay(params, p.options)
        table.insert(providers, p)
      end
    end
    for _, p in ipairs(providers) do
      params = lay(params, p.sources[source])
    end
  end
  local sites = {}
  if site and site ~= '' then
    for _, d in ipairs(data.rollup_order) do
      local mx = is_domain_name(d) and mx_of(d)
      if mx and mx.site_name ~= '' and mx.site_name == site then
        local entry = data.rollup[d]
        params = lay(params, entry.options, entry.replace_base)
        table.insert(sites, entry)
      end
    end
  end
  local own = data.exact[domain]
  if own then
    params = lay(params, own.options, own.replace_base)
  end
  for _, entry in ipairs(sites) do
    params = lay(params, entry.sources[source])
  end
  if own then
    params = lay(params, own.sources[source])
  end
  return params
end

local configured = false

local function build(options)
  if configured then
    error('policy-extras.shaping: setup was already called', 3)
  end
  if type(options) ~= 'table' then
    error('policy-extras.shaping: setup_with_automation expects a table of options', 3)
  end
  for key in pairs(options) do
    if not SETUP_OPTIONS[key] then
      error(string.format("policy-extras.shaping: unknown option '%s'", key), 3)
    end
  end
  for _, key in ipairs { 'publish', 'subscribe', 'extra_files' } do
    if options[key] ~= nil and type(options[key]) ~= 'table' then
      error(string.format("policy-extras.shaping: '%s' must be a list", key), 3)
    end
  end
  configured = true
  local files = {}
  if not options.no_default_files then
    local f = io.open(DEFAULT_FILE, 'r')
    if f then
      f:close()
      table.insert(files, DEFAULT_FILE)
    end
  end
  for _, file in ipairs(options.extra_files or {}) do
    table.insert(files, file)
  end
  local data = load(files)
  local publish, subscribe = options.publish or {}, options.subscribe or {}

  -- `hermod check`: a sources table must name a source that the sources
  -- helper defines (when the policy uses it), as KumoMTA's helper checks.
  kumo.on('validate_config', function()
    local ok, sources = pcall(require, 'policy-extras.sources')
    if not ok or not sources.is_defined then
      return
    end
    for _, ref in ipairs(data.refs) do
      if not sources.is_defined(ref.source) then
        utils.error_at(
          ref.file,
          ref.line,
          string.format("sources table names source '%s', which the sources helper does not define", ref.source)
        )
      end
    end
  end)

  local shaper = { file_names = files }
  -- `skip_make` (KumoMTA's test hook) returns the merged options instead
  -- of the egress path.
  function shaper.get_egress_path_config(domain, source, site, skip_make)
    local params = resolve(data, domain, source, site)
    if skip_make then
      return params
    end
    return kumo.make_egress_path(params)
  end
  function shaper.setup_publish()
    if #publish == 0 and #subscribe == 0 then
      return
    end
    kumo.log_warn(
      string.format(
        'policy-extras.shaping: traffic shaping automation is not available in Hermod: log records are not published to %s and no suspensions or shaping overrides are read from %s; the static shaping rules apply',
        #publish > 0 and table.concat(publish, ', ') or '(none)',
        #subscribe > 0 and table.concat(subscribe, ', ') or '(none)'
      )
    )
  end
  return shaper
end

-- shaping:setup { files }: the get_egress_path_config handler.
function M:setup(files)
  if type(files) ~= 'table' then
    error('policy-extras.shaping: setup expects a list of file names', 2)
  end
  return build({ extra_files = files }).get_egress_path_config
end

-- shaping:setup_with_automation { publish, subscribe, extra_files, ... }:
-- { get_egress_path_config, setup_publish }.
function M:setup_with_automation(options)
  return build(options)
end

return M
