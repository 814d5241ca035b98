//! Phone numbers: valid for their country under the phonenumber crate, of mobile type where
//! the metadata tells mobile apart, unique, and mapped back to their holder.

use std::collections::HashMap;

use adsim::engine;
use adsim::phone::check_mobile;

use crate::common::{country_codes, population};

#[test]
fn a_million_numbers_are_valid_mobile_and_unique() {
    let n = 1_000_000;
    let pop = population(n, 2016);
    let codes = country_codes();
    let mut numbers = Vec::with_capacity(n as usize);
    let mut per_country: HashMap<u16, u64> = HashMap::new();
    for range in engine::batches(0..n, 1 << 18) {
        for user in engine::generate(&pop, range, 4096) {
            let region = &codes[user.country as usize];
            if let Err(why) = check_mobile(region, &user.phone) {
                panic!("user {} of {region}: {} {why}", user.id, user.phone.e164());
            }
            *per_country.entry(user.country).or_default() += 1;
            numbers.push((
                user.phone.calling_code,
                user.phone.national.number,
                user.phone.national.len,
            ));
        }
    }
    assert_eq!(
        per_country.len(),
        codes.len(),
        "every country has users at 10^6"
    );
    numbers.sort_unstable();
    let before = numbers.len();
    numbers.dedup();
    assert_eq!(numbers.len(), before, "duplicate phone numbers");
}

#[test]
fn holder_of_finds_every_sampled_user_and_no_one_for_free_numbers() {
    let pop = population(1_000_000, 3);
    for id in (0..1_000_000).step_by(1009) {
        assert_eq!(pop.holder_of(&pop.user(id).phone), Some(id));
    }
    // At 10^6 users most of each space is free: a neighbour of a held number is usually
    // unheld, and never held by anyone but its true holder.
    let mut free = 0;
    for id in (0..1_000_000).step_by(10_007) {
        let mut phone = pop.user(id).phone;
        phone.national.number ^= 1;
        match pop.holder_of(&phone) {
            None => free += 1,
            Some(other) => assert_eq!(pop.user(other).phone, phone),
        }
    }
    assert!(free > 90, "{free} of 100 neighbours free");
}
