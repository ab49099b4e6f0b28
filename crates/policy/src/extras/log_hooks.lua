-- policy-extras.log_hooks: route log records to a custom_lua destination.
-- Written for Hermod from the documented behaviour of KumoMTA's helper.
local kumo = require 'kumo'
-- Given by the loader: tells the engine that a handler is exactly the
-- filterless router below, so the log-hook worker may apply its effect
-- without entering Lua for every record.
local mark_route = ...

local M = {}
local registered = {}

local function merge(base, extra)
  local out = {}
  for k, v in pairs(base or {}) do out[k] = v end
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

-- Hook `name` sends records to queue '<name>.log_hook', delivered by the
-- constructor registered as 'make.<name>.log_hook'.
function M:new(params)
  local name = params.name
  if type(name) ~= 'string' or name == '' then
    error('log_hooks:new: name must be a non-empty string', 2)
  end
  if registered[name] then
    error(string.format("log_hooks: a hook named '%s' is already defined", name), 2)
  end
  if type(params.constructor) ~= 'function' then
    error('log_hooks:new: constructor must be a function', 2)
  end
  registered[name] = true
  local queue_name = name .. '.log_hook'
  local constructor_name = 'make.' .. queue_name

  kumo.on('pre_init', function()
    kumo.configure_log_hook(merge(params.log_parameters, { name = name }))
  end)

  local filter = params.filter
  local function route(msg, hook_name)
    if hook_name ~= name then
      return
    end
    -- Records about hook messages never reach this handler (Hermod does
    -- not feed them to hooks), so there is no loop to break here, and the
    -- record need not be converted into a Lua table for every call.
    if filter and filter(msg, hook_name) then
      return false
    end
    msg:set_meta('queue', queue_name)
    return true
  end
  kumo.on('should_enqueue_log_record', route)
  if not filter and mark_route then
    mark_route(route, name, queue_name)
  end

  kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
    if domain ~= queue_name then
      return
    end
    local cfg = merge({ retry_interval = '1m', max_retry_interval = '20m' }, params.queue_config)
    cfg.protocol = {
      custom_lua = {
        constructor = constructor_name,
        batch_size = params.batch_size or 1,
        min_batch_size = params.min_batch_size,
        max_batch_latency = params.max_batch_latency,
      },
    }
    return kumo.make_queue_config(cfg)
  end)

  kumo.on(constructor_name, params.constructor)
end

-- A webhook destination: POST each record as JSON to `url`.
-- Unlike KumoMTA's helper, which bounces on every non-2xx answer, Hermod
-- retries connection errors, 5xx and 429 (until max_age) and bounces only
-- other 4xx answers, so a receiver's bad minute loses no events.
function M:new_json(params)
  local url = params.url
  if type(url) ~= 'string' or url == '' then
    error('log_hooks:new_json: url must be a non-empty string', 2)
  end
  M.new(self, {
    name = params.name,
    log_parameters = params.log_parameters,
    queue_config = params.queue_config,
    constructor = function(domain, tenant, campaign)
      local client = kumo.http.build_client {}
      local conn = {}
      function conn:send(msg)
        local response = client:post(url):header('Content-Type', 'application/json'):body(msg:get_data()):send()
        local code = response:status_code()
        local text = string.format('%d %s: %s', code, response:status_reason() or '', response:text())
        if response:status_is_success() then
          return text
        end
        if code >= 500 or code == 429 then
          kumo.reject(451, text)
        end
        kumo.reject(550, text)
      end
      function conn:close()
        client:close()
      end
      return conn
    end,
  })
end

return M
