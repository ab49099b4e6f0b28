//! `kumo.time`, `kumo.string` and `kumo.secrets`, through the policy engine,
//! with the examples KumoMTA documents.

mod common;

use common::load;

#[tokio::test]
async fn time_objects_have_kumomta_fields_and_arithmetic() {
    let p = load(
        r#"
        kumo.on('t', function()
          local t = kumo.time.with_ymd_hms(2000, 01, 02, 03, 04, 05)
          assert(tostring(t) == '2000-01-02 03:04:05 UTC', tostring(t))
          assert(t.year == 2000 and t.month == 1 and t.day == 2)
          assert(t.hour == 3 and t.minute == 4 and t.second == 5)
          assert(t.unix_timestamp == 946782245)
          assert(t.unix_timestamp_millis == 946782245000)
          assert(t.rfc2822 == 'Sun, 2 Jan 2000 03:04:05 +0000', t.rfc2822)
          assert(t.rfc3339 == '2000-01-02T03:04:05+00:00', t.rfc3339)
          assert(t:format '%H:%M:%S' == '03:04:05')
          assert(kumo.time.parse_rfc2822 'Sun, 2 Jan 2000 03:04:05 +0000' == t)
          assert(kumo.time.parse_rfc3339 '2000-01-02T04:04:05+01:00' == t)
          assert(kumo.time.from_unix_timestamp(946782245) == t)
          assert(kumo.time.from_unix_timestamp(946782245.5).unix_timestamp_millis == 946782245500)

          local d = kumo.time.parse_duration '5m'
          assert(d.seconds == 300 and d.milliseconds == 300000 and d.human == '5m')
          assert(tostring(d) == '5m')
          local later = t + d
          assert(later.minute == 9)
          assert((later - t) == d)
          assert((later - d) == t)
          assert((d + t) == later)
          local delta1 = kumo.time.parse_duration(20)
          local delta2 = kumo.time.parse_duration '10 seconds'
          assert((delta2 - delta1).seconds == -10)
          assert((delta1 + delta2).seconds == 30)
          assert(kumo.time.parse_duration(1.5).milliseconds == 1500)
          assert(kumo.time.parse_duration('-1h').seconds == -3600)
          assert(kumo.time.now().elapsed.seconds >= 0)
          assert(kumo.time.now().year >= 2024)
          assert(kumo.time.sleep == kumo.sleep)
          return true
        end)
        kumo.on('bad_date', function() return kumo.time.with_ymd_hms(2001, 2, 30, 0, 0, 0) end)
        kumo.on('bad_duration', function() return kumo.time.parse_duration 'soon' end)
        kumo.on('bad_format', function() return kumo.time.now():format '%Q' end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("bad_date").await;
    assert!(
        err.contains("2001-02-30 00:00:00 is not a valid date"),
        "{err}"
    );
    let err = p.call_err("bad_duration").await;
    assert!(
        err.contains("kumo.time.parse_duration: invalid duration \"soon\""),
        "{err}"
    );
    let err = p.call_err("bad_format").await;
    assert!(
        err.contains("Time:format: invalid format string \"%Q\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_timer_reports_its_elapsed_time_once_in_user_lua_latency() {
    let p = load(
        r#"
        kumo.on('t', function()
          do
            local scoped <close> = kumo.time.start_timer 'utils-test-scoped'
            kumo.sleep(0.01)
          end
          local timer = kumo.time.start_timer 'utils-test-explicit'
          kumo.sleep(0.02)
          local secs = timer:done()
          timer:done()
          return secs
        end)
        "#,
    )
    .await;
    assert!(p.call::<f64>("t").await >= 0.02);
    let scoped = hermod_metrics::user_lua_latency("utils-test-scoped");
    assert_eq!(scoped.count(), 1);
    let explicit = hermod_metrics::user_lua_latency("utils-test-explicit");
    assert_eq!(explicit.count(), 1, "a second done() records nothing");
    assert!(explicit.sum() >= 0.02);
}

#[tokio::test]
async fn string_functions_match_kumomta_examples() {
    let p = load(
        r#"
        local s = kumo.string
        kumo.on('t', function()
          assert(kumo.json_encode(s.split('Mary had a little lamb', ' ')) == '["Mary","had","a","little","lamb"]')
          assert(kumo.json_encode(s.rsplit('Mary had a little lamb', ' ')) == '["lamb","little","a","had","Mary"]')
          assert(kumo.json_encode(s.splitn('Mary had a little lamb', 3, ' ')) == '["Mary","had","a little lamb"]')
          assert(kumo.json_encode(s.rsplitn('Mary had a little lamb', 3, ' ')) == '["lamb","little","Mary had a"]')
          assert(kumo.json_encode(s.split_whitespace ' Mary  had\ta ') == '["Mary","had","a"]')
          assert(kumo.json_encode(s.split_ascii_whitespace 'Mary had') == '["Mary","had"]')
          assert(kumo.json_encode(s.split('', ',')) == '[""]')
          assert(s.trim '\n Hello\tworld\t\n' == 'Hello\tworld')
          assert(s.trim_end '\n Hello\tworld\t\n' == '\n Hello\tworld')
          assert(s.trim_start '\n Hello\tworld\t\n' == 'Hello\tworld\t\n')
          assert(s.replace('this is old', 'old', 'new') == 'this is new')
          assert(s.replacen('foo foo 123 foo', 'foo', 'new', 2) == 'new new 123 foo')
          assert(s.starts_with('hello world', 'hello') and not s.starts_with('hello', 'world'))
          assert(s.ends_with('hello world', 'world') and not s.ends_with('hello', 'hell'))
          assert(s.wrap 'hello' == 'hello')
          assert(s.wrap(string.rep('A', 200), 75, 100) == string.rep('A', 100) .. '\r\n\t' .. string.rep('A', 100))
          assert(s.wrap(string.rep('hello there ', 10), 75, 100) ==
            'hello there hello there hello there hello there hello there hello there\r\n'
            .. '\thello there hello there hello there hello there')
          assert(require('kumo.string') == s)
          return true
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
}

#[tokio::test]
async fn eval_template_renders_jinja_escapes_by_file_name_and_names_template_errors() {
    let p = load(
        r#"
        kumo.on('t', function()
          assert(kumo.string.eval_template('example.json', [[{{name}}]], { name = 'John' }) == '"John"')
          assert(kumo.string.eval_template('x.txt', [[{{ n + 1 }} {{ who }}]], { n = 1, who = 'a<b' }) == '2 a<b')
          assert(kumo.string.eval_template('x.html', [[{{ who }}]], { who = 'a<b' }) == 'a&lt;b')
          assert(kumo.string.eval_template('x', '{{ raw }}', nil, 'Static') == '{{ raw }}')
          return true
        end)
        kumo.on('bad', function()
          return kumo.string.eval_template('mine.txt', 'line one\n{% if %}', {})
        end)
        kumo.on('dialect', function()
          return kumo.string.eval_template('a', 'b', {}, 'Handlebars')
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("bad").await;
    assert!(
        err.contains("kumo.string.eval_template: mine.txt:2: syntax error"),
        "{err}"
    );
    let err = p.call_err("dialect").await;
    assert!(err.contains("\"Handlebars\" is not supported"), "{err}");
}

#[tokio::test]
async fn secrets_load_reads_a_file_or_inline_key_data() {
    let p = load(
        r#"
        local f = io.open('@DIR@/secret', 'wb'); f:write('s3cret\0bin\n'); f:close()
        kumo.on('t', function()
          assert(kumo.secrets.load('@DIR@/secret') == 's3cret\0bin\n')
          assert(kumo.secrets.load { key_data = 'inline' } == 'inline')
          return true
        end)
        kumo.on('missing', function()
          return (kumo.secrets.load('/no/such/secret'))
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("missing").await;
    assert!(
        err.starts_with(&format!(
            "{}:9: kumo.secrets.load: cannot read key file '/no/such/secret'",
            p.path
        )),
        "{err}"
    );
}
