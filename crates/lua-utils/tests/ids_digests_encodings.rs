//! `kumo.uuid`, `kumo.digest` and `kumo.encode`, through the policy engine,
//! against the values KumoMTA documents.

mod common;

use common::load;

#[tokio::test]
async fn a_parsed_uuid_gives_every_documented_form() {
    let p = load(
        r#"
        kumo.on('t', function()
          local u = kumo.uuid.parse '69994630-3e27-11ef-91fc-cc28aa0a5c5a'
          assert(tostring(u) == '69994630-3e27-11ef-91fc-cc28aa0a5c5a')
          assert(u.hyphenated == '69994630-3e27-11ef-91fc-cc28aa0a5c5a')
          assert(u.simple == '699946303e2711ef91fccc28aa0a5c5a')
          assert(u.braced == '{69994630-3e27-11ef-91fc-cc28aa0a5c5a}')
          assert(u.urn == 'urn:uuid:69994630-3e27-11ef-91fc-cc28aa0a5c5a')
          assert(u.bytes == '\x69\x99\x46\x30\x3e\x27\x11\xef\x91\xfc\xcc\x28\xaa\x0a\x5c\x5a')
          assert(kumo.encode.base64url_nopad_encode(u.bytes) == 'aZlGMD4nEe-R_MwoqgpcWg')
          assert(kumo.uuid.parse('{69994630-3e27-11ef-91fc-cc28aa0a5c5a}') == u)
          assert(kumo.uuid.parse(u.simple) == u and kumo.uuid.parse(u.urn) == u)
          return true
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
}

#[tokio::test]
async fn new_uuids_have_their_version_and_differ() {
    let p = load(
        r#"
        kumo.on('t', function()
          local out = {}
          for _, v in ipairs { 1, 4, 6, 7 } do
            local a, b = kumo.uuid['new_v' .. v](), kumo.uuid['new_v' .. v]()
            assert(a ~= b, 'two v' .. v .. ' uuids are equal')
            table.insert(out, a.hyphenated:sub(15, 15))
          end
          return table.concat(out)
        end)
        "#,
    )
    .await;
    assert_eq!(p.call::<String>("t").await, "1467");
}

#[tokio::test]
async fn a_bad_uuid_is_named_at_the_policy_line() {
    let p = load("kumo.on('t', function()\n  return (kumo.uuid.parse('nope'))\nend)\n").await;
    let err = p.call_err("t").await;
    assert!(
        err.starts_with(&format!(
            "{}:2: kumo.uuid.parse: invalid UUID \"nope\"",
            p.path
        )),
        "{err}"
    );
}

#[tokio::test]
async fn digests_match_kumomta_documented_values_in_every_encoding() {
    let p = load(
        r#"
        kumo.on('t', function()
          local d = kumo.digest.sha1 'hello'
          assert(tostring(d) == d.hex)
          assert(d.hex == 'aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d')
          assert(d.bytes == '\xaa\xf4\xc6\x1d\xdc\xc5\xe8\xa2\xda\xbe\xde\x0f\x3b\x48\x2c\xd9\xae\xa9\x43\x4d')
          assert(d.base32 == 'VL2MMHO4YXUKFWV63YHTWSBM3GXKSQ2N')
          assert(d.base32_nopad == 'VL2MMHO4YXUKFWV63YHTWSBM3GXKSQ2N')
          assert(d.base32hex == 'LBQCC7ESONKA5MLURO7JMI1CR6NAIGQD')
          assert(d.base64 == 'qvTGHdzF6KLavt4PO0gs2a6pQ00=')
          assert(d.base64_nopad == 'qvTGHdzF6KLavt4PO0gs2a6pQ00')
          assert(d.base64url == 'qvTGHdzF6KLavt4PO0gs2a6pQ00=')
          assert(d.base64url_nopad == 'qvTGHdzF6KLavt4PO0gs2a6pQ00')
          assert(kumo.digest.crc32('something').hex == '09da31fb')
          assert(kumo.digest.sha1('foo').hex == '0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33')
          assert(kumo.digest.sha3_384('foo').hex == '665551928d13b7d84ee02734502b018d896a0fb87eed5adb4c87ba91bbd6489410e11b0fbcc06ed7d0ebad559e5d3bb5')
          assert(kumo.digest.sha256('').hex == 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
          -- Several arguments are one stream; a non-string is hashed as its JSON.
          assert(kumo.digest.sha256('a', 'b') == kumo.digest.sha256('ab'))
          assert(kumo.digest.sha256({ 1, 2 }) == kumo.digest.sha256('[1,2]'))
          -- Keys are sorted, so equal tables hash equally whatever their order.
          assert(kumo.digest.sha256({ b = 1, a = { d = 2, c = 3 } }) == kumo.digest.sha256('{"a":{"c":3,"d":2},"b":1}'))
          for _, name in ipairs { 'sha224', 'sha384', 'sha512', 'sha512_256', 'sha3_256', 'sha3_512' } do
            assert(#kumo.digest[name]('x').bytes > 0, name)
          end
          return true
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
}

#[tokio::test]
async fn hmacs_take_a_keysource_and_match_kumomta_documented_values() {
    let p = load(
        r#"
        local f = io.open('@DIR@/key', 'w'); f:write('your key'); f:close()
        kumo.on('t', function()
          local key = { key_data = 'your key' }
          local msg = 'your message'
          assert(kumo.digest.hmac_sha1(key, msg).hex == '317d0dfd868a5c06c9444ac1328aa3e2bfd29fb2')
          assert(kumo.digest.hmac_sha224(key, msg).hex == '991ff8089bd2a781d10c0568cbf2717794ac7b7fbcc9db049f19fc61')
          assert(kumo.digest.hmac_sha256(key, msg).hex == '87fc1cec5c02f0991ae80f50e98eb2eb5213d07fc40417682a74448ac1deb07c')
          assert(kumo.digest.hmac_sha384(key, msg).hex == 'cd274957b95ce192d41dd52f83fd2eb9277aa2fa210ec798ee16e978801a89b7e7b956af3976d1a50a60ece87c7b2a66')
          assert(kumo.digest.hmac_sha512(key, msg).hex == '2f5ddcdbd062a5392f07b0cd0262bf52c21bfb3db513296240cca8d5accc09d18d96be0a94995be4494c032f1eda946ad549fb61ccbe985d160f0b2f9588d34b')
          assert(kumo.digest.hmac_sha256('@DIR@/key', msg) == kumo.digest.hmac_sha256(key, msg))
          return true
        end)
        kumo.on('vault', function()
          return kumo.digest.hmac_sha256({ vault_path = 'x' }, 'm')
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("vault").await;
    assert!(
        err.contains("kumo.digest.hmac_sha256") && err.contains("vault"),
        "{err}"
    );
}

#[tokio::test]
async fn every_encoding_round_trips_binary_data() {
    let p = load(
        r#"
        kumo.on('t', function()
          local data = '\0\1\2\255hello\128'
          for _, name in ipairs { 'base32', 'base32_nopad', 'base32hex', 'base32hex_nopad',
              'base64', 'base64_nopad', 'base64url', 'base64url_nopad', 'hex' } do
            local enc = kumo.encode[name .. '_encode'](data)
            assert(kumo.encode[name .. '_decode'](enc) == data, name)
          end
          assert(kumo.encode.hex_encode('hi') == '6869')
          assert(kumo.encode.hex_decode('4A4b') == 'JK')
          assert(kumo.encode.base64_encode('hello') == 'aGVsbG8=')
          assert(kumo.encode.base32_encode('hello') == 'NBSWY3DP')
          return true
        end)
        kumo.on('bad', function()
          return kumo.encode.base64_decode('not base64!')
        end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("bad").await;
    assert!(
        err.contains("kumo.encode.base64_decode: input is not valid base64"),
        "{err}"
    );
}

#[tokio::test]
async fn charsets_convert_to_and_from_utf8_and_unmappable_characters_are_dropped_or_refused() {
    let p = load(
        r#"
        kumo.on('t', function()
          assert(kumo.encode.charset_decode('iso-8859-1', 'caf\xe9') == 'café')
          assert(kumo.encode.charset_encode('latin1', 'café') == 'caf\xe9')
          assert(kumo.encode.charset_decode('shift_jis', kumo.encode.charset_encode('shift_jis', '日本')) == '日本')
          assert(kumo.encode.charset_encode('utf-16le', 'hi') == 'h\0i\0')
          assert(kumo.encode.charset_encode('iso-8859-1', 'a日b') == 'ab')
          return true
        end)
        kumo.on('strict', function() return (kumo.encode.charset_encode('iso-8859-1', 'a日b', false)) end)
        kumo.on('malformed', function() return (kumo.encode.charset_decode('utf-8', '\xff')) end)
        kumo.on('unknown', function() return (kumo.encode.charset_decode('klingon', 'x')) end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    let err = p.call_err("strict").await;
    assert!(
        err.contains("'日' cannot be represented in windows-1252"),
        "{err}"
    );
    let err = p.call_err("malformed").await;
    assert!(
        err.contains("kumo.encode.charset_decode: input is not valid UTF-8"),
        "{err}"
    );
    let err = p.call_err("unknown").await;
    assert!(err.contains("unknown charset \"klingon\""), "{err}");
}
