#!/usr/bin/env python3
"""Choose mobile number blocks that are valid under both libphonenumber metadata versions.

adsim draws phone numbers uniformly from per-country "blocks": a national-number prefix and
a national significant number (NSN) length; every number in a block is a valid mobile
number. docs/model.md §3 asks for blocks valid under both the `phonenumber` crate's metadata (9.0.33,
the XML file the crate ships) and current libphonenumber (9.0.43, shared/data/mobile-patterns.json,
which python `phonenumbers` 9.0.43 also carries).

A prefix is accepted when its first and last numbers and 600 random completions fully match
the mobile pattern of both metadata versions and python phonenumbers classifies them as
MOBILE or FIXED_LINE_OR_MOBILE. Prefixes are explored breadth first (shortest first, so blocks
are as large as possible) up to 5 digits; the largest blocks are kept until the country's
capacity reaches 5 times its users at 10^9 users in all.

Usage: python3 tools/choose_blocks.py CRATE_METADATA_XML ../shared/data/mobile-patterns.json
prints the `blocks` arrays for data/countries.toml. Needs `pip install phonenumbers==9.0.43`.
The adsim test suite re-checks every drawn number with the crate, so this script is an aid,
not the authority.
"""
import json, random, re, sys
import xml.etree.ElementTree as ET
import phonenumbers

xml_path, json_path = sys.argv[1], sys.argv[2]
users_millions = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
new = json.load(open(json_path))["regions"]
tree = ET.parse(xml_path)
old = {}
for terr in tree.getroot().iter("territory"):
    tid = terr.get("id")
    if tid in new:
        mob = terr.find("mobile")
        pat = "".join(mob.find("nationalNumberPattern").text.split())
        old[tid] = re.compile(pat)

rng = random.Random(2016)
OK_TYPES = {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}

def ok(region, nsn):
    if not old[region].fullmatch(nsn) or not newre[region].fullmatch(nsn):
        return False
    n = phonenumbers.parse("+%d%s" % (new[region]["country_code"], nsn))
    return phonenumbers.is_valid_number(n) and phonenumbers.number_type(n) in OK_TYPES and phonenumbers.region_code_for_number(n) == region

def full(region, prefix, length):
    rest = length - len(prefix)
    cands = [prefix + "0" * rest, prefix + "9" * rest]
    cands += [prefix + "".join(rng.choice("0123456789") for _ in range(rest)) for _ in range(600)]
    good = sum(ok(region, c) for c in cands)
    return good, len(cands)

newre = {k: re.compile(v["mobile_nsn_regex"]) for k, v in new.items()}
for region, meta in new.items():
    # users at 10^9 in all: published millions scaled pro rata by 1000/637.5 (see data/countries.toml)
    target = 5.0 * users_millions.get(region, 50) * 1e6 * 1000.0 / 637.5
    blocks = []
    for length in sorted(meta["mobile_nsn_lengths"], reverse=True)[:1]:
        frontier = [str(d) for d in range(10)]
        while frontier:
            nxt = []
            for p in frontier:
                good, n = full(region, p, length)
                if good == n:
                    blocks.append((p, length))
                elif good > 0 and len(p) < 5 and length - len(p) > 5:
                    nxt += [p + str(d) for d in range(10)]
            frontier = nxt
    blocks.sort(key=lambda b: (len(b[0]), b[0]))
    chosen, cap = [], 0
    for p, l in blocks:
        if cap >= target and len(chosen) >= 4:
            break
        chosen.append((p, l)); cap += 10 ** (l - len(p))
    print(region, len(blocks), "blocks found; kept", len(chosen), "capacity %.3g" % cap, file=sys.stderr)
    print(region, json.dumps([f"{p}/{l}" for p, l in chosen]))
