use serde_json::{Value, json};

use super::*;

const README: &[u8] = include_bytes!("../../tests/fixtures/hepixvmitrust-readme-example.json");
const IPHC: &[u8] = include_bytes!("../../tests/fixtures/iphc-unsigned.json");

fn edit(base: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(base).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn first_image(v: &mut Value) -> &mut Value {
    &mut v["hv:imagelist"]["hv:images"][0]["hv:image"]
}

#[test]
fn decodes_the_readme_example() {
    let l = ImageList::from_json(README).unwrap();
    assert_eq!(l.identifier.to_string(), "4e186b44-2c64-40ea-97d5-e9e5c0bce059");
    assert_eq!(l.version, "1");
    assert_eq!(l.created.to_string(), "2011-03-10T17:09:12Z");
    assert_eq!(l.endorsers[0].dn, "/C=DE/O=GermanGrid/OU=DESY/CN=Owen Synge");
    assert_eq!(l.endorsers[0].ca, "/C=DE/O=GermanGrid/CN=GridKa-CA");
    assert_eq!(l.images.len(), 1);
    let i = &l.images[0];
    assert_eq!(i.size, 2_147_483_648);
    assert_eq!(i.hypervisor, "kvm");
    assert!(i.chunking.is_none());
    assert!(l.skipped.is_empty());
}

#[test]
fn round_trip_keeps_every_field() {
    for fixture in [README, IPHC] {
        let l = ImageList::from_json(fixture).unwrap();
        let again = ImageList::from_json(&l.to_json()).unwrap();
        assert_eq!(l, again);
        let original: Value = serde_json::from_slice(fixture).unwrap();
        let encoded: Value = serde_json::from_slice(&l.to_json()).unwrap();
        assert_eq!(original, encoded, "decode + encode changed the document");
    }
}

#[test]
fn unknown_fields_survive_at_every_level() {
    let doc = edit(IPHC, |v| {
        v["hv:imagelist"]["ad:vo"] = json!("atlas");
        v["hv:imagelist"]["hv:endorser"]["hv:x509"]["x:extra"] = json!({"n": [1, 2]});
        first_image(v)["ad:mpuri"] = json!("https://appdb.example/store/vo/image/x:1/");
    });
    let l = ImageList::from_json(&doc).unwrap();
    assert_eq!(l.vo(), Some("atlas"));
    assert_eq!(l.images[0].mpuri(), Some("https://appdb.example/store/vo/image/x:1/"));
    assert_eq!(l.images[0].md5(), Some("79b4436412283bb63c2cba4ac796bcd9"));
    assert_eq!(l.images[0].osname(), None);
    assert_eq!(l.extra["ad:vo"], json!("atlas"));
    assert_eq!(l.images[0].extra["sl:checksum:md5"], json!("79b4436412283bb63c2cba4ac796bcd9"));
    let out: Value = serde_json::from_slice(&l.to_json()).unwrap();
    assert_eq!(out, serde_json::from_slice::<Value>(&doc).unwrap());
}

#[test]
fn encoding_sorts_keys_with_four_space_indent() {
    let text = String::from_utf8(ImageList::from_json(IPHC).unwrap().to_json()).unwrap();
    assert!(text.starts_with("{\n    \"hv:imagelist\": {\n        \"dc:date:created\""));
    assert!(text.ends_with("}\n"));
}

#[test]
fn size_as_string_and_endorser_as_array() {
    let doc = edit(README, |v| {
        first_image(v)["hv:size"] = json!("121243136");
        let e = v["hv:imagelist"]["hv:endorser"].take();
        v["hv:imagelist"]["hv:endorser"] = json!([e]);
    });
    let l = ImageList::from_json(&doc).unwrap();
    assert_eq!(l.images[0].size, 121_243_136);
    assert_eq!(l.endorsers.len(), 1);
    // Emitted in the object form.
    let out: Value = serde_json::from_slice(&l.to_json()).unwrap();
    assert!(out["hv:imagelist"]["hv:endorser"].is_object());
}

#[test]
fn image_lacking_a_required_key_is_left_out_and_kept() {
    let doc = edit(README, |v| {
        first_image(v).as_object_mut().unwrap().remove("sl:comments");
    });
    let l = ImageList::from_json(&doc).unwrap();
    assert!(l.images.is_empty());
    assert_eq!(l.skipped.len(), 1);
    assert_eq!(l.skipped[0].missing, "sl:comments");
    let out: Value = serde_json::from_slice(&l.to_json()).unwrap();
    assert_eq!(out, serde_json::from_slice::<Value>(&doc).unwrap());
}

#[test]
fn malformed_values_reject_the_list_and_say_where() {
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|v| first_image(v)["dc:identifier"] = json!("../../etc/passwd")),
            "hv:images[0]/hv:image/dc:identifier",
        ),
        (
            Box::new(|v| first_image(v)["dc:identifier"] = json!("urn:uuid:488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d")),
            "dc:identifier",
        ),
        (Box::new(|v| first_image(v)["hv:size"] = json!(-5)), "hv:size"),
        (Box::new(|v| first_image(v)["hv:size"] = json!(1e30)), "hv:size"),
        (Box::new(|v| first_image(v)["hv:size"] = json!("99999999999999999999999")), "hv:size"),
        (Box::new(|v| first_image(v)["sl:checksum:sha512"] = json!("abc")), "sl:checksum:sha512"),
        (Box::new(|v| first_image(v)["dc:title"] = json!(7)), "dc:title"),
        (Box::new(|v| v["hv:imagelist"]["dc:date:expires"] = json!("2011-04-07 17:09:12")), "dc:date:expires"),
        (Box::new(|v| v["hv:imagelist"]["hv:images"] = json!({})), "hv:images"),
        (Box::new(|v| v["hv:imagelist"]["hv:endorser"] = json!([])), "hv:endorser"),
        (Box::new(|v| first_image(v)[CHUNK_SIZE_KEY] = json!(4096)), CHUNK_SIZE_KEY),
    ];
    for (mutate, field) in cases {
        let doc = edit(README, mutate);
        let err = ImageList::from_json(&doc).unwrap_err();
        assert_eq!(err.check(), "format");
        assert!(err.to_string().contains(field), "{err} does not name {field}");
    }
}

#[test]
fn duplicate_keys_and_duplicate_images_are_rejected() {
    let text = String::from_utf8(README.to_vec()).unwrap();
    let dup = text.replacen("\"dc:title\": \"README example\"", "\"dc:title\": \"A\", \"dc:title\": \"B\"", 1);
    assert!(matches!(ImageList::from_json(dup.as_bytes()), Err(Error::DuplicateKey(k)) if k == "dc:title"));
    let twice = edit(README, |v| {
        let img = v["hv:imagelist"]["hv:images"][0].clone();
        v["hv:imagelist"]["hv:images"].as_array_mut().unwrap().push(img);
    });
    assert!(ImageList::from_json(&twice).unwrap_err().to_string().contains("appears twice"));
}

#[test]
fn chunking_extension_round_trips() {
    let root = "ab".repeat(32);
    let doc = edit(README, |v| {
        first_image(v)[CHUNK_SIZE_KEY] = json!(4_194_304);
        first_image(v)[MANIFEST_ROOT_KEY] = json!(root);
    });
    let l = ImageList::from_json(&doc).unwrap();
    let c = l.images[0].chunking.unwrap();
    assert_eq!(c.chunk_size, ChunkSize::DEFAULT);
    assert_eq!(c.root.to_string(), root);
    assert_eq!(ImageList::from_json(&l.to_json()).unwrap(), l);
}

#[test]
fn not_an_image_list() {
    assert!(ImageList::from_json(b"[]").is_err());
    assert!(ImageList::from_json(br#"{"foo": 1}"#).unwrap_err().to_string().contains("hv:imagelist"));
    assert!(ImageList::from_json(b"\xff").is_err());
}
