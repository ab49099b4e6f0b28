-- policy-extras.tsa_publish: the publishing half of traffic shaping
-- automation, used by policy-extras.shaping's setup_with_automation.
-- Written for Hermod from the documented behaviour of KumoMTA's helper:
-- for every `publish` endpoint a log hook named '<endpoint>.tsa.kumomta'
-- POSTs each interesting log record, as its JSON line, to
-- '<endpoint>/publish_log_v1', where KumoMTA's TSA daemon reads the
-- destinations' responses. A record the endpoint does not take (it is down,
-- or answers other than 2xx) is retried like any queued message, so the
-- server keeps serving while the daemon is away.
local kumo = require 'kumo'
local utils = require 'policy-extras.policy_utils'

local M = {}

-- Records about mail entering Hermod or moving between its own queues say
-- nothing about a destination, so they are not published by default.
local UNINTERESTING = {
  AdminRebind = true,
  DeferredInjectionRebind = true,
  Delayed = true,
  Reception = true,
  Rejection = true,
  XferIn = true,
  XferOut = true,
}

local function record_types(list, what)
  local set = {}
  for _, name in ipairs(list) do
    if type(name) ~= 'string' then
      error(string.format("policy-extras.shaping: '%s' must be a list of record type names", what), 4)
    end
    set[name] = true
  end
  return set
end

-- A response as the TSA matches it: 'code enhanced content' on one line.
local function response_line(response)
  local e = response.enhanced_code
  local enhanced = ''
  if type(e) == 'table' then
    enhanced = string.format(' %s.%s.%s', e.class, e.subject, e.detail)
  end
  local content = tostring(response.content or ''):gsub('[\r\n]+', ' ')
  return string.format('%s%s %s', tostring(response.code or ''), enhanced, content)
end

-- True when some automation rule of the shaping files matches the record's
-- response. The rules of every table are tried, which can only publish
-- more than the daemon needs: the daemon matches by domain and site itself.
local function matches_a_rule(rules, record)
  local response = record.response
  if type(response) ~= 'table' then
    return false
  end
  local line = response_line(response)
  local internal = tostring(response.content or ''):find('KumoMTA internal: ', 1, true) == 1
  for _, rule in ipairs(rules) do
    if rule.match_internal or not internal then
      for _, re in ipairs(rule.regexes) do
        if re:is_match(line) then
          return true
        end
      end
    end
  end
  return false
end

local function publisher(endpoint, options)
  local url = endpoint:gsub('/+$', '') .. '/publish_log_v1'
  local client = kumo.http.build_client { timeout = options.publish_timeout or '1 minute' }
  local conn = {}
  function conn:send(msg)
    local response = client:post(url):header('Content-Type', 'application/json'):body(msg:get_data()):send()
    local text =
      string.format('%d %s: %s', response:status_code(), response:status_reason() or '', response:text())
    if response:status_is_success() then
      return text
    end
    -- Any refusal is retried: the daemon decides nothing about the mail.
    kumo.reject(451, text)
  end
  function conn:close()
    client:close()
  end
  return conn
end

-- Register the hooks' routing, queues and constructors (at the policy's top
-- level), and return setup_publish, which configures the hooks (in init).
-- `rules`: the compiled automation rules of the shaping files.
function M.setup(options, rules)
  local skip = options.skip_log_record_types and record_types(options.skip_log_record_types, 'skip_log_record_types')
    or utils.merge_into(UNINTERESTING, {})
  for name in pairs(record_types(options.additional_skip_log_record_types or {}, 'additional_skip_log_record_types')) do
    skip[name] = true
  end
  local pre_filter = options.pre_filter ~= false

  local hooks = {}
  for _, endpoint in ipairs(options.publish or {}) do
    if type(endpoint) ~= 'string' or not endpoint:match '^https?://' then
      error(string.format("policy-extras.shaping: publish endpoint %q must be an http(s) URL", tostring(endpoint)), 3)
    end
    local name = endpoint .. '.tsa.kumomta'
    hooks[name] = endpoint
    kumo.on('make.' .. name, function()
      return publisher(endpoint, options)
    end)
  end
  if next(hooks) == nil then
    return function() end
  end

  kumo.on('get_queue_config', function(domain)
    if not hooks[domain] then
      return
    end
    local params = { retry_interval = '1m', max_retry_interval = '20m' }
    utils.merge_into(options.tsa_queue_config or {}, params)
    params.protocol = { custom_lua = { constructor = 'make.' .. domain } }
    return kumo.make_queue_config(params)
  end)

  -- Hermod never offers records about hook messages to hooks, so the
  -- daemon's own deliveries cannot loop back here.
  kumo.on('should_enqueue_log_record', function(msg, hook_name)
    if not hooks[hook_name] then
      return
    end
    local record = msg:get_meta 'log_record'
    if type(record) ~= 'table' or skip[record.type] then
      return false
    end
    if pre_filter and not matches_a_rule(rules, record) then
      return false
    end
    msg:set_meta('queue', hook_name)
    return true
  end)

  local per_record = {}
  for name in pairs(skip) do
    per_record[name] = { enable = false }
  end
  return function()
    for name in pairs(hooks) do
      kumo.configure_log_hook { name = name, per_record = per_record, back_pressure = options.back_pressure }
    end
  end
end

return M
