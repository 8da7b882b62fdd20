//! How url-hash should hash: `cargo bench --bench hashing`.
//!
//! Measures the Maglev table that `ringmux::pool::url_hash` uses against a
//! consistent-hash ring (built here, as ringmux used one before, at several
//! point counts per unit of weight): the share of keys that move when a
//! fourth upstream is added to three (ideal: 25%), the keys that move
//! between upstreams that stay when one of four is removed (ideal: none),
//! how uneven the key shares are (largest share over the mean), the time to
//! build the table for 4 and for 64 upstreams, and the time of one lookup.
//! Each figure is the mean (and the worst) over 20 sets of upstream names,
//! with 100,000 keys each. Then the table's build time and memory for
//! 1,000 and 10,000 upstreams, weighted 1000 and 999 in turn.

use std::hint::black_box;
use std::time::Instant;

use ringmux::codec::mix;
use ringmux::pool::maglev::Table;

const KEYS: usize = 100_000;
const SETS: usize = 20;

/// A way of mapping keys to upstream indices.
trait Mapper {
    fn build(names: &[String]) -> Self;
    /// Index into `names` of the owner of `key`.
    fn owner(&self, key: u64) -> usize;
}

/// A ring: each upstream puts `P` points (hashes of its name and the
/// point's number) on a 64-bit circle; a key belongs to the first point at
/// or after its hash.
struct Ring<const P: u32> {
    points: Vec<(u64, u32)>,
}

fn name_hash(name: &str, seed: u64) -> u64 {
    mix(ringmux::codec::path_hash(name.as_bytes()) ^ mix(seed))
}

impl<const P: u32> Mapper for Ring<P> {
    fn build(names: &[String]) -> Self {
        let mut points: Vec<(u64, u32)> = names
            .iter()
            .enumerate()
            .flat_map(|(i, n)| (0..P).map(move |p| (name_hash(n, u64::from(p)), i as u32)))
            .collect();
        points.sort_unstable();
        Ring { points }
    }

    fn owner(&self, key: u64) -> usize {
        let h = mix(key);
        let i = self.points.partition_point(|p| p.0 < h) % self.points.len();
        self.points[i].1 as usize
    }
}

/// The table ringmux uses, with every upstream at weight 1.
struct Maglev {
    table: Table,
    /// Table member index to index into the names.
    back: Vec<usize>,
}

impl Mapper for Maglev {
    fn build(names: &[String]) -> Self {
        let members: Vec<(String, u32)> = names.iter().map(|n| (n.clone(), 1)).collect();
        let table = Table::build(&members);
        let back = table
            .members
            .iter()
            .map(|(m, _)| names.iter().position(|n| n == m).expect("a member"))
            .collect();
        Maglev { table, back }
    }

    fn owner(&self, key: u64) -> usize {
        self.back[self.table.order(key, 1).next().expect("a member")]
    }
}

fn names(set: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.{set}.{i}.7:8080")).collect()
}

fn keys() -> Vec<u64> {
    (0..KEYS)
        .map(|i| ringmux::codec::path_hash(format!("/item/{i}").as_bytes()))
        .collect()
}

struct Figures {
    added_moved: Vec<f64>,
    removed_strays: Vec<f64>,
    imbalance: Vec<f64>,
    build_4_us: f64,
    build_64_us: f64,
    lookup_ns: f64,
}

fn measure<M: Mapper>() -> Figures {
    let keys = keys();
    let mut f = Figures {
        added_moved: Vec::new(),
        removed_strays: Vec::new(),
        imbalance: Vec::new(),
        build_4_us: 0.0,
        build_64_us: 0.0,
        lookup_ns: 0.0,
    };
    for set in 0..SETS {
        let four = names(set, 4);
        let (three, four_m) = (M::build(&four[..3]), M::build(&four));
        let owners3: Vec<usize> = keys.iter().map(|&k| three.owner(k)).collect();
        let owners4: Vec<usize> = keys.iter().map(|&k| four_m.owner(k)).collect();
        let moved = owners3.iter().zip(&owners4).filter(|(a, b)| a != b).count();
        f.added_moved.push(moved as f64 / KEYS as f64);
        // Remove the second of four: keys of the others must stay.
        let rest: Vec<String> = four
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, n)| n.clone())
            .collect();
        let without = M::build(&rest);
        let back = [0usize, 2, 3];
        let strays = keys
            .iter()
            .zip(&owners4)
            .filter(|(_, &o)| o != 1)
            .filter(|(&k, &o)| back[without.owner(k)] != o)
            .count();
        f.removed_strays.push(strays as f64 / KEYS as f64);
        let mut share = [0usize; 4];
        for &o in &owners4 {
            share[o] += 1;
        }
        let mean = KEYS as f64 / 4.0;
        f.imbalance.push(*share.iter().max().unwrap() as f64 / mean);
    }
    let time = |n: usize| {
        let names = names(99, n);
        let rounds = 5;
        let t = Instant::now();
        for _ in 0..rounds {
            black_box(M::build(&names));
        }
        t.elapsed().as_secs_f64() * 1e6 / rounds as f64
    };
    f.build_4_us = time(4);
    f.build_64_us = time(64);
    let m = M::build(&names(7, 4));
    let t = Instant::now();
    let mut acc = 0usize;
    for _ in 0..10 {
        for &k in &keys {
            acc = acc.wrapping_add(m.owner(black_box(k)));
        }
    }
    black_box(acc);
    f.lookup_ns = t.elapsed().as_nanos() as f64 / (10 * KEYS) as f64;
    f
}

fn mean_max(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (mean, v.iter().cloned().fold(0.0, f64::max))
}

fn report(name: &str, f: &Figures) {
    let (am, ax) = mean_max(&f.added_moved);
    let (rm, rx) = mean_max(&f.removed_strays);
    let (im, ix) = mean_max(&f.imbalance);
    println!(
        "| {name} | {:.1}% ({:.1}%) | {:.2}% ({:.2}%) | {im:.3} ({ix:.3}) | {:.0} | {:.0} | {:.0} |",
        am * 100.0,
        ax * 100.0,
        rm * 100.0,
        rx * 100.0,
        f.build_4_us,
        f.build_64_us,
        f.lookup_ns
    );
}

fn main() {
    println!("{KEYS} keys, {SETS} name sets; mean (worst)\n");
    println!("| mapping | moved adding a 4th (ideal 25%) | others' keys moved removing 1 of 4 (ideal 0) | largest share / mean | build 4, µs | build 64, µs | lookup, ns |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    report("ring, 100 points/weight", &measure::<Ring<100>>());
    report("ring, 256 points/weight", &measure::<Ring<256>>());
    report("ring, 1024 points/weight", &measure::<Ring<1024>>());
    report("Maglev (ringmux), M = 65537", &measure::<Maglev>());
    println!("\n| upstreams (weights 1000, 999) | table slots | memory | build |");
    println!("|---:|---:|---:|---:|");
    for n in [1_000usize, 10_000] {
        let members: Vec<(String, u32)> = (0..n)
            .map(|i| {
                (
                    format!("10.{}.{}.7:8080", i / 250, i % 250),
                    1000 - (i % 2) as u32,
                )
            })
            .collect();
        let t = Instant::now();
        let table = black_box(Table::build(&members));
        let took = t.elapsed();
        println!(
            "| {n} | {} | {:.1} MiB | {:.1} ms |",
            table.len(),
            (table.len() * 4) as f64 / (1 << 20) as f64,
            took.as_secs_f64() * 1e3
        );
    }
}
