//! `bpf/mesh.h` is the one definition of what the agent and the programs
//! share; this test reads the compiled objects' BTF (what the kernel sees)
//! and checks the Rust mirror in `src/layout.rs` against it field by field.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use mesh_ebpf::{CONFIG_GLOBAL, Counter, MeshConfig, REDIRECT_OBJECT, REJECTED_OBJECT, STATS_MAP};
use object::{Object, ObjectSection};

const OBJECTS: [(&str, &[u8]); 2] = [("redirect", REDIRECT_OBJECT), ("reject", REJECTED_OBJECT)];

#[test]
fn mesh_config_matches_the_header() {
    let rust: Vec<(&str, usize, usize)> = vec![
        ("inpod_mark", offset_of!(MeshConfig, inpod_mark), 4),
        ("redirect_mark", offset_of!(MeshConfig, redirect_mark), 4),
        ("mark_mask", offset_of!(MeshConfig, mark_mask), 4),
        ("probe_v4", offset_of!(MeshConfig, probe_v4), 4),
        ("probe_v6", offset_of!(MeshConfig, probe_v6), 16),
        ("outbound_port", offset_of!(MeshConfig, outbound_port), 2),
        (
            "inbound_plaintext_port",
            offset_of!(MeshConfig, inbound_plaintext_port),
            2,
        ),
        ("hbone_port", offset_of!(MeshConfig, hbone_port), 2),
        ("reserved", offset_of!(MeshConfig, reserved), 2),
    ];
    for (object, bytes) in OBJECTS {
        let btf = Btf::from_object(bytes);
        let id = btf.named(KIND_STRUCT, "mesh_config");
        assert_eq!(
            btf.size_of(id),
            size_of::<MeshConfig>(),
            "{object}: sizeof(struct mesh_config)"
        );
        let members = btf.members(id);
        let c: Vec<(&str, usize, usize)> = members
            .iter()
            .map(|m| (m.name.as_str(), m.bit_offset / 8, btf.size_of(m.type_id)))
            .collect();
        assert_eq!(c, rust, "{object}: struct mesh_config field by field");
        // The field sizes add up to the struct: no padding, as aya::Pod needs.
        assert_eq!(
            rust.iter().map(|f| f.2).sum::<usize>(),
            size_of::<MeshConfig>()
        );
        // The global the loader writes has that type.
        let var = btf.named(KIND_VAR, CONFIG_GLOBAL);
        assert_eq!(
            btf.strip(btf.types[&var].target),
            id,
            "{object}: CONFIG's type"
        );
    }
}

#[test]
fn counters_match_the_header() {
    for (object, bytes) in OBJECTS {
        let btf = Btf::from_object(bytes);
        let id = btf.named(KIND_ENUM, "mesh_counter");
        let values: HashMap<String, i64> = btf.enumerators(id).into_iter().collect();
        for c in Counter::ALL {
            assert_eq!(
                values.get(c.c_name()),
                Some(&(c as i64)),
                "{object}: {}",
                c.c_name()
            );
        }
        assert_eq!(
            values["MESH_COUNTERS"],
            i64::from(Counter::COUNT),
            "{object}"
        );
        assert_eq!(
            values.len(),
            Counter::ALL.len() + 1,
            "{object}: a counter Rust does not know"
        );

        // The map: a per-CPU array of u64 indexed by u32, one per counter.
        let map = btf.strip(btf.types[&btf.named(KIND_VAR, STATS_MAP)].target);
        let fields: HashMap<String, u32> = btf
            .members(map)
            .into_iter()
            .map(|m| (m.name, m.type_id))
            .collect();
        // __uint(name, N) is `int (*name)[N]`; __type(name, T) is `T *name`.
        let number = |f: &str| btf.array_len(btf.types[&fields[f]].target);
        let pointee_size = |f: &str| btf.size_of(btf.types[&fields[f]].target);
        assert_eq!(number("type"), 6, "{object}: BPF_MAP_TYPE_PERCPU_ARRAY");
        assert_eq!(number("max_entries"), Counter::COUNT as usize, "{object}");
        assert_eq!(pointee_size("key"), size_of::<u32>(), "{object}");
        assert_eq!(pointee_size("value"), size_of::<u64>(), "{object}");
    }
}

// A reader for the little of BTF this needs (kernel Documentation/bpf/btf.rst).

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_VAR: u32 = 14;

struct Type {
    kind: u32,
    name: String,
    /// `size` for sized kinds, the referenced type otherwise.
    size_or_type: u32,
    target: u32,
    extra: Vec<u8>,
    vlen: usize,
    kind_flag: bool,
    /// Names of struct members or enumerators, in order.
    names: Vec<String>,
}

struct Member {
    name: String,
    type_id: u32,
    bit_offset: usize,
}

struct Btf {
    types: HashMap<u32, Type>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

impl Btf {
    fn from_object(bytes: &[u8]) -> Self {
        let file = object::File::parse(bytes).expect("an ELF object");
        let data = file
            .section_by_name(".BTF")
            .expect("built with -g, so it has BTF")
            .data()
            .unwrap();
        assert_eq!(u16::from_le_bytes([data[0], data[1]]), 0xeb9f, "BTF magic");
        let hdr_len = u32_at(data, 4) as usize;
        let (type_off, type_len) = (u32_at(data, 8) as usize, u32_at(data, 12) as usize);
        let str_off = u32_at(data, 16) as usize;
        let types_bytes = &data[hdr_len + type_off..hdr_len + type_off + type_len];
        let strings = &data[hdr_len + str_off..];
        let string = |off: u32| {
            let s = &strings[off as usize..];
            String::from_utf8_lossy(&s[..s.iter().position(|&b| b == 0).unwrap()]).into_owned()
        };
        let mut types = HashMap::new();
        let (mut at, mut id) = (0, 1);
        while at < types_bytes.len() {
            let info = u32_at(types_bytes, at + 4);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra_len = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
            let size_or_type = u32_at(types_bytes, at + 8);
            let extra = &types_bytes[at + 12..at + 12 + extra_len];
            let names = match kind {
                KIND_STRUCT => (0..vlen).map(|i| string(u32_at(extra, i * 12))).collect(),
                KIND_ENUM => (0..vlen).map(|i| string(u32_at(extra, i * 8))).collect(),
                _ => Vec::new(),
            };
            types.insert(
                id,
                Type {
                    kind,
                    name: string(u32_at(types_bytes, at)),
                    size_or_type,
                    target: size_or_type,
                    extra: extra.to_vec(),
                    vlen,
                    kind_flag: info >> 31 == 1,
                    names,
                },
            );
            at += 12 + extra_len;
            id += 1;
        }
        Self { types }
    }

    fn named(&self, kind: u32, name: &str) -> u32 {
        let found: Vec<u32> = self
            .types
            .iter()
            .filter(|(_, t)| t.kind == kind && t.name == name)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one BTF type of kind {kind} named {name}"
        );
        found[0]
    }

    /// Through typedefs, const and volatile.
    fn strip(&self, mut id: u32) -> u32 {
        while matches!(
            self.types[&id].kind,
            KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST
        ) {
            id = self.types[&id].target;
        }
        id
    }

    fn size_of(&self, id: u32) -> usize {
        let t = &self.types[&self.strip(id)];
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_ENUM => t.size_or_type as usize,
            KIND_ARRAY => {
                let elem = u32_at(&t.extra, 0);
                self.size_of(elem) * u32_at(&t.extra, 8) as usize
            }
            k => panic!("no size for BTF kind {k}"),
        }
    }

    fn array_len(&self, id: u32) -> usize {
        let t = &self.types[&self.strip(id)];
        assert_eq!(t.kind, KIND_ARRAY);
        u32_at(&t.extra, 8) as usize
    }

    fn members(&self, id: u32) -> Vec<Member> {
        let t = &self.types[&id];
        assert_eq!(t.kind, KIND_STRUCT);
        (0..t.vlen)
            .map(|i| {
                let m = &t.extra[i * 12..];
                let offset = u32_at(m, 8);
                Member {
                    name: t.names[i].clone(),
                    type_id: u32_at(m, 4),
                    bit_offset: if t.kind_flag {
                        offset & 0xff_ffff
                    } else {
                        offset
                    } as usize,
                }
            })
            .collect()
    }

    fn enumerators(&self, id: u32) -> Vec<(String, i64)> {
        let t = &self.types[&id];
        (0..t.vlen)
            .map(|i| {
                let e = &t.extra[i * 8..];
                (t.names[i].clone(), i64::from(u32_at(e, 4) as i32))
            })
            .collect()
    }
}
