//! `kumo.domain_map`, `kumo.regex_set_map` and `kumo.regex`, through the
//! policy engine, with the examples KumoMTA documents.

mod common;

use common::{load, load_err};

#[tokio::test]
async fn domain_map_behaves_as_kumomta_documents() {
    let p = load(
        r#"
        kumo.on('t', function()
          local dmap = kumo.domain_map.new()
          dmap['foo'] = 'bar'
          assert(dmap['foo'] == 'bar')
          assert(dmap['not.set'] == nil)
          dmap['*.example.com'] = 'wildcard'
          assert(dmap['example.com'] == nil)
          assert(dmap['foo.example.com'] == 'wildcard')
          dmap['explicit.example.com'] = 'explicit'
          assert(dmap['explicit.example.com'] == 'explicit')

          local seeded = kumo.domain_map.new { ['*.woot.com'] = 123, ['example.com'] = 24 }
          seeded['*.example.com'] = 42
          assert(seeded['lemon.example.com'] == 42)
          assert(seeded['example.com'] == 24)
          assert(seeded['woot.com'] == nil)
          assert(seeded['aa.woot.com'] == 123)
          return true
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
}

#[tokio::test]
async fn domain_map_values_are_copies_pairs_lists_them_and_nil_removes_a_key() {
    let p = load(
        r#"
        kumo.on('t', function()
          local m = kumo.domain_map.new { ['Example.COM'] = { pool = 'a', list = { 1, 2 } } }
          local v = m['example.com.']
          v.pool = 'changed'
          assert(m['EXAMPLE.com'].pool == 'a', 'the map kept its own copy')
          assert(m['example.com'].list[2] == 2)
          m['*.Other.org'] = 'w'
          local keys = {}
          for k, v in pairs(m) do table.insert(keys, k .. '=' .. (v.pool or v)) end
          table.sort(keys)
          assert(table.concat(keys, ',') == '*.other.org=w,example.com=a', table.concat(keys, ','))
          m['example.com'] = nil
          assert(m['example.com'] == nil)
          return true
        end)
        kumo.on('bad', function()
          local m = kumo.domain_map.new()
          m['x.com'] = print
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("bad").await;
    assert!(
        err.contains("the value for \"x.com\" cannot be stored: a function"),
        "{err}"
    );
}

#[tokio::test]
async fn a_domain_map_set_as_a_global_in_init_is_seen_by_every_context() {
    let p = load(
        r#"
        kumo.on('init', function()
          routes = kumo.domain_map.new { ['*.example.com'] = 'pool-a' }
        end)
        kumo.on('route', function(domain) kumo.sleep(0.01); return routes[domain] end)
        "#,
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let engine = p.engine.clone();
        tasks.push(tokio::spawn(async move {
            engine
                .call::<String>("route", format!("h{i}.example.com"))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().as_deref(), Some("pool-a"));
    }
    assert!(
        p.engine.spare_contexts() > 1,
        "the calls used several contexts"
    );
}

#[tokio::test]
async fn regex_set_map_maps_text_through_the_first_matching_pattern() {
    let p = load(
        r#"
        kumo.on('t', function()
          local map = kumo.regex_set_map.new {
            hello = 'hello', bye = 'bye', later = 'bye', ['Good day'] = 'hello',
          }
          assert(map['hello there'] == 'hello')
          assert(map['goodbye'] == 'bye')
          assert(map['see you later'] == 'bye')
          assert(map['Good day to you'] == 'hello')
          assert(map['not.set'] == nil)
          return true
        end)
        kumo.on('frozen', function()
          local map = kumo.regex_set_map.new { a = 1 }
          map['b'] = 2
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("frozen").await;
    assert!(err.contains("cannot be changed after it is built"), "{err}");
}

#[tokio::test]
async fn a_bad_regex_set_map_pattern_is_named_at_the_policy_line() {
    let (err, path) = load_err(
        "local ok = 1\nlocal map = kumo.regex_set_map.new { ['4\\\\.2\\\\.('] = 1, fine = 2 }\n",
    )
    .await;
    assert!(
        err.contains(&format!(
            "{path}:2: kumo.regex_set_map.new: invalid pattern \"4\\\\.2\\\\.(\""
        )),
        "{err}"
    );
}

#[tokio::test]
async fn compiled_regexes_have_kumomta_methods() {
    let p = load(
        r#"
        kumo.on('t', function()
          local re = kumo.regex.compile "'(?<title>[^']+)'\\s+\\((?<year>\\d{4})\\)"
          local cap = re:captures "Not my favorite movie: 'Citizen Kane' (1941)."
          assert(cap[0] == "'Citizen Kane' (1941)")
          assert(cap[1] == 'Citizen Kane' and cap.title == 'Citizen Kane')
          assert(cap[2] == '1941' and cap.year == '1941')
          assert(re:captures 'nothing here' == nil)
          assert(kumo.regex.compile('oo'):is_match 'foo')
          assert(kumo.regex.compile('o+'):find 'fooood' == 'oooo')
          local words = kumo.regex.compile('\\b\\w{13}\\b'):find_all 'Retroactively relinquishing remunerations is reprehensible.'
          assert(kumo.json_encode(words) == '["Retroactively","relinquishing","remunerations","reprehensible"]')
          assert(kumo.regex.compile('[^01]+'):replace('1078910', '') == '1010')
          local swap = kumo.regex.compile '(?P<last>[^,\\s]+),\\s+(?P<first>\\S+)'
          assert(swap:replace('Springsteen, Bruce', '$first $last') == 'Bruce Springsteen')
          assert(kumo.regex.compile('a'):replace_all('banana', 'o') == 'bonono')
          assert(kumo.regex.compile('a'):replacen('banana', 2, 'o') == 'bonona')
          local parts = kumo.regex.compile('[ \\t]+'):split 'a b \t  c\td    e'
          assert(kumo.json_encode(parts) == '["a","b","c","d","e"]')
          assert(kumo.regex.escape('a.b*c') == 'a\\.b\\*c')
          return true
        end)
        kumo.on('bad', function()
          return kumo.regex.compile('(unclosed')
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("bad").await;
    assert!(
        err.contains("kumo.regex.compile: invalid pattern \"(unclosed\""),
        "{err}"
    );
}

#[tokio::test]
async fn cidr_map_finds_the_most_specific_block_for_an_address_in_any_form() {
    let p = load(
        r#"
        kumo.on('t', function()
          local cmap = kumo.cidr.make_map()
          cmap['127.0.0.1'] = 'bar'
          assert(cmap['127.0.0.1'] == 'bar')
          assert(cmap['not.set'] == nil)
          cmap['10.0.0.0/24'] = '10. block'
          assert(cmap['10.0.0.1'] == '10. block')
          assert(cmap['10.0.0.42'] == '10. block')
          assert(cmap['100.0.0.100'] == nil)

          local classes = kumo.cidr.make_map {
            ['127.0.0.0/24'] = 'loopback', ['10.0.0.0/8'] = 'lan', ['10.9.0.0/16'] = 'lab',
            ['::1'] = 'loopback6',
          }
          classes['4.2.4.2'] = 4242
          assert(classes['127.0.0.1:25'] == 'loopback')
          assert(classes['[127.0.0.1]'] == 'loopback')
          assert(classes['[::1]:25'] == 'loopback6')
          assert(classes['10.1.2.3'] == 'lan' and classes['10.9.2.3'] == 'lab')
          assert(classes['4.2.4.2'] == 4242)
          classes['10.9.0.0/16'] = nil
          assert(classes['10.9.2.3'] == 'lan')
          return true
        end)
        kumo.on('host_bits', function()
          local m = kumo.cidr.make_map { ['10.0.0.1/24'] = 'x' }
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("host_bits").await;
    assert!(
        err.contains("kumo.cidr.make_map: invalid CIDR \"10.0.0.1/24\": host bits are set; did you mean 10.0.0.0/24?"),
        "{err}"
    );
}
