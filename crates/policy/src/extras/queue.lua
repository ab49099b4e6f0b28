-- policy-extras.queue: tenants, campaigns and per-domain queue settings from
-- TOML (or JSON) files. Written for Hermod from the documented behaviour of
-- KumoMTA's helper:
--
--   scheduling_header = "X-Schedule"    msg:import_scheduling_header: the
--                                       header's JSON sets the message's
--                                       delivery window; then it is removed
--   tenant_header = "X-Tenant"          tenant from this header ...
--   remove_tenant_header = true         ... which is then removed
--   campaign_header = "X-Campaign"      likewise for the campaign
--   remove_campaign_header = true
--   default_tenant = "default-tenant"   tenant when the header is absent
--
--   [tenant.'mytenant']                 make_queue_config options for a
--   egress_pool = 'pool-1'              tenant, plus require_authz: the
--   require_authz = ["alice"]           SMTP AUTH identities allowed to
--                                       send as this tenant
--   [queue.default]                     options for every queue
--   [queue.'gmail.com']                 for one domain ('*.example.com'
--   retry_interval = '17 mins'          matches its subdomains), plus
--   routing_domain = '[10.0.0.1]'       routing_domain
--   [queue.'gmail.com'.'mytenant']      that domain and tenant
--   [queue.'gmail.com'.'mytenant'.'welcome']   ... and campaign
--
-- Settings merge from the least to the most specific: default, domain,
-- tenant, domain and tenant, domain, tenant and campaign.
--
-- queue_module:setup { files } returns a helper whose :apply(msg) sets the
-- message's tenant, campaign and routing domain, and answers
-- get_queue_config. The files are read and checked when the policy loads:
-- a misspelt key or a bad value is reported as file:line by `hermod check`.
local kumo = require 'kumo'
local utils = require 'policy-extras.policy_utils'

local M = {}

local TOP_LEVEL = {
  scheduling_header = 'string',
  tenant_header = 'string',
  remove_tenant_header = 'boolean',
  campaign_header = 'string',
  remove_campaign_header = 'boolean',
  default_tenant = 'string',
  tenant = 'table',
  queue = 'table',
}

-- Keys the helper itself reads, beside make_queue_config's options.
local HELPER_KEYS = { routing_domain = 'string', require_authz = 'table' }

-- Documented keys Hermod does not implement yet: refused, never ignored.
-- KumoMTA applies overall_max_message_rate from a throttle_insert_ready_queue
-- handler with kumo.make_throttle, neither of which Hermod has.
local NOT_YET = {
  overall_max_message_rate = 'a throttle shared by every queue of a tenant or campaign '
    .. '(KumoMTA applies it through the throttle_insert_ready_queue event and kumo.make_throttle)',
}

-- true: a make_queue_config option; false: not one (so a nested scope
-- such as a tenant or campaign name); or raises for an option whose value
-- make_queue_config refuses.
local function is_option(file, key, value)
  local ok, err = pcall(kumo.make_queue_config, { [key] = value })
  if ok then
    return true
  end
  if tostring(err):find('unknown field', 1, true) then
    return false
  end
  utils.file_error(file, key, string.format("'%s': %s", key, utils.error_reason(err)))
end

local function not_yet(file, key)
  if NOT_YET[key] then
    utils.file_error(file, key, string.format("'%s' needs %s, which Hermod does not support yet", key, NOT_YET[key]))
  end
end

-- One scope's table: its options (and helper keys) in `out.options`, and
-- nested scopes (tables that are not options) handed to `nested`.
local function scope(file, where, data, allowed_nested, nested)
  local options = {}
  for key, value in pairs(data) do
    not_yet(file, key)
    if HELPER_KEYS[key] then
      if type(value) ~= HELPER_KEYS[key] then
        utils.file_error(file, key, string.format("%s: '%s' must be a %s", where, key, HELPER_KEYS[key]))
      end
      options[key] = value
    elseif is_option(file, key, value) then
      options[key] = value
    elseif allowed_nested and type(value) == 'table' then
      nested(key, value)
    else
      utils.file_error(file, key, string.format("%s: unknown key '%s'", where, key))
    end
  end
  return options
end

local function load(files)
  local data = { tenants = {}, domains = {} }
  for _, file in ipairs(files) do
    local raw = utils.load_json_or_toml_file(file)
    for key, value in pairs(raw) do
      not_yet(file, key)
      if not TOP_LEVEL[key] then
        utils.file_error(file, key, string.format("unknown key '%s'", key))
      end
      if type(value) ~= TOP_LEVEL[key] then
        utils.file_error(file, key, string.format("'%s' must be a %s", key, TOP_LEVEL[key]))
      end
    end
    for _, key in ipairs {
      'scheduling_header',
      'tenant_header',
      'remove_tenant_header',
      'campaign_header',
      'remove_campaign_header',
      'default_tenant',
    } do
      if raw[key] ~= nil then
        data[key] = raw[key]
      end
    end
    for name, t in pairs(raw.tenant or {}) do
      local where = string.format("tenant '%s'", name)
      if type(t) ~= 'table' then
        utils.file_error(file, name, where .. ' must be a table')
      end
      local options = scope(file, where, t, false)
      if options.routing_domain then
        utils.file_error(file, 'routing_domain', where .. ": routing_domain belongs in a [queue.'<domain>'] table")
      end
      data.tenants[name] = utils.merge_into(options, data.tenants[name] or {})
    end
    for domain, d in pairs(raw.queue or {}) do
      local where = string.format("queue '%s'", domain)
      if type(d) ~= 'table' then
        utils.file_error(file, domain, where .. ' must be a table')
      end
      local entry = data.domains[domain] or { options = {}, tenants = {} }
      local options = scope(file, where, d, domain ~= 'default', function(tenant, t)
        local twhere = string.format("%s, tenant '%s'", where, tenant)
        local tentry = entry.tenants[tenant] or { options = {}, campaigns = {} }
        local toptions = scope(file, twhere, t, true, function(campaign, c)
          local cwhere = string.format("%s, campaign '%s'", twhere, campaign)
          tentry.campaigns[campaign] = utils.merge_into(scope(file, cwhere, c, false), tentry.campaigns[campaign] or {})
        end)
        utils.merge_into(toptions, tentry.options)
        entry.tenants[tenant] = tentry
      end)
      if options.require_authz then
        utils.file_error(file, 'require_authz', where .. ": require_authz belongs in a [tenant.'<name>'] table")
      end
      utils.merge_into(options, entry.options)
      data.domains[domain] = entry
    end
  end
  if data.default_tenant and not data.tenants[data.default_tenant] then
    utils.file_error(
      files[#files],
      'default_tenant',
      string.format("default_tenant '%s' has no [tenant.'%s'] table", data.default_tenant, data.default_tenant)
    )
  end
  return data
end

-- The domain's table: an exact key, else the nearest '*.<parent>' key.
local function domain_entry(data, domain)
  if not domain then
    return nil
  end
  domain = domain:lower()
  local exact = data.domains[domain]
  if exact then
    return exact
  end
  local rest = domain
  while true do
    local parent = rest:match '^[^.]+%.(.+)$'
    if not parent then
      return nil
    end
    local wild = data.domains['*.' .. parent]
    if wild then
      return wild
    end
    rest = parent
  end
end

-- Every setting for domain, tenant and campaign, least specific first;
-- `helper_keys` keeps routing_domain and require_authz too.
local function resolve(data, domain, tenant, campaign, helper_keys)
  local params = {}
  local function add(options)
    for k, v in pairs(options or {}) do
      if helper_keys or not HELPER_KEYS[k] then
        params[k] = v
      end
    end
  end
  add(data.domains.default and data.domains.default.options)
  local d = domain_entry(data, domain)
  add(d and d.options)
  add(tenant and data.tenants[tenant])
  local t = d and tenant and d.tenants[tenant]
  add(t and t.options)
  add(t and campaign and t.campaigns[campaign])
  if next(params) == nil then
    return nil
  end
  return params
end

local function apply(data, msg)
  if data.scheduling_header then
    msg:import_scheduling_header(data.scheduling_header, true)
  end
  if data.campaign_header then
    local campaign = msg:get_first_named_header_value(data.campaign_header)
    if campaign then
      msg:set_meta('campaign', campaign)
      if data.remove_campaign_header then
        msg:remove_all_named_headers(data.campaign_header)
      end
    end
  end
  local tenant, from
  if data.tenant_header then
    tenant = msg:get_first_named_header_value(data.tenant_header)
    if tenant then
      from = string.format("the '%s' header", data.tenant_header)
      if data.remove_tenant_header then
        msg:remove_all_named_headers(data.tenant_header)
      end
    end
  end
  if not tenant and data.default_tenant then
    tenant, from = data.default_tenant, 'default_tenant'
  end
  if tenant then
    local config = data.tenants[tenant]
    if not config then
      kumo.reject(500, string.format("tenant '%s' given by %s is not defined in the queue configuration", tenant, from))
    end
    if config.require_authz then
      local who = msg:get_meta 'authz_id'
      if not who then
        kumo.reject(500, string.format("tenant '%s' requires SMTP AUTH", tenant))
      end
      if not utils.table_contains(config.require_authz, who) then
        kumo.reject(500, string.format("authz_id '%s' may not send as tenant '%s'", who, tenant))
      end
    end
    msg:set_meta('tenant', tenant)
  end
  local recipient = msg:recipient_list()[1]
  if recipient then
    local all = resolve(data, recipient.domain, msg:get_meta 'tenant', msg:get_meta 'campaign', true)
    if all and all.routing_domain then
      msg:set_meta('routing_domain', all.routing_domain)
    end
  end
end

local configured = false

function M:setup(files)
  return M:setup_with_options { file_names = files }
end

function M:setup_with_options(options)
  if configured then
    error('policy-extras.queue: setup was already called', 2)
  end
  if type(options) ~= 'table' or type(options.file_names) ~= 'table' then
    error('policy-extras.queue: setup expects a list of file names', 2)
  end
  for key in pairs(options) do
    if key ~= 'file_names' and key ~= 'skip_queue_config_hook' and key ~= 'invalidate_with_epoch' then
      error(string.format("policy-extras.queue: unknown setup option '%s'", key), 2)
    end
  end
  configured = true
  local data = load(options.file_names)
  local helper = { file_names = options.file_names }
  function helper:apply(msg)
    return apply(data, msg)
  end
  function helper:resolve_config(domain, tenant, campaign)
    return resolve(data, domain, tenant, campaign, false)
  end
  if not options.skip_queue_config_hook then
    kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
      local params = resolve(data, domain, tenant, campaign, false)
      return params and kumo.make_queue_config(params)
    end)
  end
  return helper
end

return M
