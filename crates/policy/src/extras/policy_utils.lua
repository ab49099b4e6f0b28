-- policy-extras.policy_utils: small table, string and file helpers that
-- KumoMTA's helpers and production policies use. Written for Hermod from
-- the documented behaviour of KumoMTA's module of the same name.
local kumo = require 'kumo'

local M = {}

local function is_container(v)
  local t = type(v)
  return t == 'table' or t == 'userdata'
end

-- Deep equality of plain values and tables (userdata compare by identity
-- unless `ignore_mt` is set and both are tables).
function M.equals(a, b, ignore_mt)
  if a == b then
    return true
  end
  if type(a) ~= 'table' or type(b) ~= 'table' then
    return false
  end
  if not ignore_mt and getmetatable(a) ~= getmetatable(b) then
    return false
  end
  for k, v in pairs(a) do
    if not M.equals(v, b[k], ignore_mt) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

local function show(v)
  if is_container(v) then
    return M.dumps(v)
  end
  return tostring(v)
end

function M.assert_eq(a, b, message)
  if not M.equals(a, b) then
    error(string.format('%s: expected %s == %s', message or 'assert_eq failed', show(a), show(b)), 2)
  end
end

function M.assert_ne(a, b, message)
  if M.equals(a, b) then
    error(string.format('%s: expected %s ~= %s', message or 'assert_ne failed', show(a), show(b)), 2)
  end
end

function M.assert_matches(s, pattern, message)
  if type(s) ~= 'string' or not s:find(pattern) then
    error(
      string.format('%s: %s does not match pattern %s', message or 'assert_matches failed', show(s), pattern),
      2
    )
  end
end

-- Copy every key of `src` over `dest` (shallow): `dest` wins nothing.
function M.merge_into(src, dest)
  for k, v in pairs(src or {}) do
    dest[k] = v
  end
  return dest
end

-- As merge_into, but tables present on both sides are merged key by key.
function M.recursive_merge_into(src, dest)
  for k, v in pairs(src or {}) do
    if type(v) == 'table' and type(dest[k]) == 'table' then
      M.recursive_merge_into(v, dest[k])
    else
      dest[k] = v
    end
  end
  return dest
end

function M.table_contains(tbl, value)
  for _, v in pairs(tbl or {}) do
    if v == value then
      return true
    end
  end
  return false
end

function M.table_keys(tbl)
  local keys = {}
  for k in pairs(tbl or {}) do
    table.insert(keys, k)
  end
  return keys
end

function M.table_is_empty(tbl)
  return next(tbl or {}) == nil
end

-- A data file by its extension: `.json` is JSON, anything else TOML. A
-- table given instead of a file name is the data itself (how helpers'
-- tests and inline configuration pass it).
function M.load_json_or_toml_file(filename)
  if type(filename) == 'table' then
    return filename
  end
  if type(filename) ~= 'string' then
    error(string.format('expected a file name or a table, got %s', type(filename)), 2)
  end
  if filename:match '%.json$' then
    return kumo.json_load(filename)
  end
  return kumo.toml_load(filename)
end

-- The line of `file` where `key` is first written (as `key =`, `"key" =`,
-- JSON's `"key":`, or inside a `[table."key"]` header), or nil: helpers name the line of a
-- bad key in their data files (Hermod's addition; `hermod check` shows it).
function M.key_line(file, key)
  if type(file) ~= 'string' then
    return nil
  end
  local f = io.open(file, 'r')
  if not f then
    return nil
  end
  local escaped = key:gsub('[%^%$%(%)%%%.%[%]%*%+%-%?]', '%%%0')
  local n = 0
  for line in f:lines() do
    n = n + 1
    local bare = line:match('^%s*([^=]+)=') or ''
    bare = bare:gsub('%s+$', '')
    if
      bare == key
      or line:find('"' .. escaped .. '"%s*:')
      or bare == '"' .. key .. '"'
      or bare == "'" .. key .. "'"
      or (line:match '^%s*%[' and (line:find('"' .. escaped .. '"') or line:find("'" .. escaped .. "'") or line:find('%.' .. escaped .. '%]') or line:find('%[' .. escaped .. '%]')))
    then
      f:close()
      return n
    end
  end
  f:close()
  return nil
end

-- The dotted key of a TOML table header's text ('"a.com".sources."x"' ->
-- { 'a.com', 'sources', 'x' }), or nil when it is not one.
local function header_path(text)
  local parts, i = {}, 1
  while i <= #text do
    local c = text:sub(i, i)
    if c == '.' or c:match '%s' then
      i = i + 1
    elseif c == '"' or c == "'" then
      local j = text:find(c, i + 1, true)
      if not j then
        return nil
      end
      table.insert(parts, text:sub(i + 1, j - 1))
      i = j + 1
    else
      local word = text:match('^[%w_%-]+', i)
      if not word then
        return nil
      end
      table.insert(parts, word)
      i = i + #word
    end
  end
  return parts
end

local function same_path(a, b, prefix_only)
  if #a < #b or (not prefix_only and #a ~= #b) then
    return false
  end
  for i, part in ipairs(b) do
    if a[i] ~= part then
      return false
    end
  end
  return true
end

-- Where things are written in a TOML file, for errors that name a line in
-- a nested table (KumoMTA's shaping.toml repeats the same keys in every
-- section, so the first `key =` of the file is often the wrong line).
-- `layout:line(path, key, nth)`: the line of `key` in the `nth` (default 1)
-- table whose header is `path`, or of that header when `key` is nil (or is
-- not written there), or of the first header below `path`; nil when none.
-- `layout:first_line(path)`: the first header at or below `path`, for
-- ordering tables as they are written. A JSON file, inline data or a file
-- that cannot be read gives a layout that knows no lines.
function M.toml_layout(file)
  local layout = { headers = {} }
  local f = type(file) == 'string' and not file:match '%.json$' and io.open(file, 'r')
  if f then
    local n, current = 0, nil
    for text in f:lines() do
      n = n + 1
      local inner = text:match '^%s*%[%[(.-)%]%]' or text:match '^%s*%[([^%[].-)%]'
      local path = inner and header_path(inner)
      if path then
        current = { path = path, line = n, keys = {} }
        table.insert(layout.headers, current)
      elseif current then
        local key = text:match '^%s*([%w_%-]+)%s*=' or text:match '^%s*"([^"]*)"%s*=' or text:match "^%s*'([^']*)'%s*="
        if key and not current.keys[key] then
          current.keys[key] = n
        end
      end
    end
    f:close()
  end
  function layout:line(path, key, nth)
    local seen = 0
    for _, h in ipairs(self.headers) do
      if same_path(h.path, path) then
        seen = seen + 1
        if seen == (nth or 1) then
          return (key and h.keys[key]) or h.line
        end
      end
    end
    return self:first_line(path)
  end
  function layout:first_line(path)
    for _, h in ipairs(self.headers) do
      if same_path(h.path, path, true) then
        return h.line
      end
    end
    return nil
  end
  return layout
end

-- Raise `message` as `file:line: message` (just `file: message` without a
-- line, or `(inline table): message` for data given inline).
function M.error_at(file, line, message)
  local name = type(file) == 'string' and file or '(inline table)'
  if line then
    error(string.format('%s:%d: %s', name, line, message), 0)
  end
  error(string.format('%s: %s', name, message), 0)
end

-- Raise `message` about `key` in `file` as `file:line: message` (just
-- `file: message` when the line cannot be found, or the data was inline).
function M.file_error(file, key, message)
  M.error_at(file, key and M.key_line(file, key), message)
end

-- A constructor's error text without the location it carries (a line
-- inside a helper, which says nothing about the data file): helpers put
-- the data file's line in front instead (Hermod's addition).
function M.error_reason(err)
  return (tostring(err):gsub('^%[builtin [^%]]*%]:%d+: ', ''):gsub('^[^\n]-:%d+: ', '', 1))
end

function M.starts_with(s, prefix)
  return s:sub(1, #prefix) == prefix
end

function M.ends_with(s, suffix)
  return suffix == '' or s:sub(-#suffix) == suffix
end

-- '10.0.0.1:25' -> '10.0.0.1', 25; '[::1]:25' -> '::1', 25; no port -> addr, nil.
function M.split_ip_port(text)
  local v6, port = text:match '^%[(.+)%]:(%d+)$'
  if v6 then
    return v6, tonumber(port)
  end
  local v6only = text:match '^%[(.+)%]$'
  if v6only then
    return v6only, nil
  end
  local host, p = text:match '^([^:]+):(%d+)$'
  if host then
    return host, tonumber(p)
  end
  return text, nil
end

local function dump(value, indent, seen, out)
  if type(value) ~= 'table' then
    table.insert(out, type(value) == 'string' and string.format('%q', value) or tostring(value))
    return
  end
  if seen[value] then
    table.insert(out, '<cycle>')
    return
  end
  seen[value] = true
  local keys = M.table_keys(value)
  table.sort(keys, function(a, b)
    return tostring(a) < tostring(b)
  end)
  table.insert(out, '{\n')
  for _, k in ipairs(keys) do
    table.insert(out, string.rep('  ', indent + 1))
    table.insert(out, string.format('[%s] = ', type(k) == 'string' and string.format('%q', k) or tostring(k)))
    dump(value[k], indent + 1, seen, out)
    table.insert(out, ',\n')
  end
  table.insert(out, string.rep('  ', indent) .. '}')
  seen[value] = nil
end

-- A readable, deterministic (sorted keys) rendering of a value.
function M.dumps(value)
  local out = {}
  dump(value, 0, {}, out)
  return table.concat(out)
end

return M
