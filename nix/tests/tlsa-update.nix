# TLSA auto-update (SPEC §2.7): `postern tlsa sync`, run by
# postern-tlsa-sync.service, publishes `3 1 1` records by RFC 2136 UPDATE
# signed with TSIG; unsigned updates are refused; a new key is published
# first, served only after holdTtls × TTL, and the old record is removed
# last — at no moment does DNS fail to match the served certificate.
# Hermetic twins: tests/world_tlsa.rs, tests/world_tlsa_rollover.rs (see README.md).
{
  pkgs,
  lib,
  world,
}:

let
  inherit (world) addresses tsig pki;
in
{
  name = "postern-tlsa-update";

  nodes = {
    inherit (world.nodes) ns resolver;

    postern =
      { lib, ... }:
      {
        imports = [ world.nodes.postern ];

        # The certificate files are replaced in place, as an ACME client
        # does; postern reads them through a group.
        users.groups.posterntls = { };
        systemd.tmpfiles.rules = [ "d /var/lib/postern-tls 0750 root posterntls -" ];

        services.postern = {
          supplementaryGroups = [ "posterntls" ];
          tlsa.autoUpdate = {
            enable = true;
            # The script runs the sync itself, at the moments it checks; the
            # timer exists but must not race it (nor a slow boot: its first
            # run would start postern before the trust anchor is written).
            onBoot = "1d";
            interval = "1d";
          };
          settings = {
            certificates.default = lib.mkForce {
              cert = "%{file:/var/lib/postern-tls/fullchain.pem}%";
              privateKey = "%{file:/var/lib/postern-tls/key.pem}%";
            };
            tlsa = {
              records.mx = {
                host = "mx.postern.test";
                port = 25;
                certificate = "default";
                usages = [ "3 1 1" ];
                ttl = 5;
                provider = "knot";
              };
              providers.knot = {
                type = "rfc2136";
                server = "${addresses.ns}:53";
                zone = "postern.test";
                key = {
                  inherit (tsig) name algorithm;
                  secret = "%{file:/run/credentials/postern.service/tsig}%";
                };
              };
              rollover = {
                mode = "gate";
                holdTtls = 2;
              };
            };
          };
        };
      };
  };

  testScript = world.pythonHelpers + ''
    import time

    PKI = "${pki}"
    OWNER = "_25._tcp.mx.postern.test"
    hash_a = postern.succeed(f"cat {PKI}/postern-a.spki-sha256").strip().lower()
    hash_b = postern.succeed(f"cat {PKI}/postern-b.spki-sha256").strip().lower()


    def install_certificate(name):
        """Replace key and chain in place, each by an atomic rename."""
        for src, dst in ((f"{name}.key", "key.pem"), (f"{name}.pem", "fullchain.pem")):
            postern.succeed(
                f"install -m 0640 -g posterntls {PKI}/{src} /var/lib/postern-tls/.{dst}"
                f" && mv -f /var/lib/postern-tls/.{dst} /var/lib/postern-tls/{dst}"
            )


    def published():
        """The `3 1 1` data of the TLSA set, asked of the authoritative server."""
        out = postern.succeed(f"dig @{ADDR['ns']} +short +norecurse TLSA {OWNER}")
        data = []
        for line in out.splitlines():
            fields = line.split()
            if fields[:3] == ["3", "1", "1"]:
                data.append("".join(fields[3:]).lower())
        return sorted(data)


    def served():
        """SHA-256 of the SPKI postern presents after STARTTLS on port 25."""
        return postern.succeed(
            "openssl s_client -starttls smtp -connect 127.0.0.1:25 -servername mx.postern.test"
            " </dev/null 2>/dev/null | openssl x509 -noout -pubkey"
            " | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1"
        ).strip().lower()


    def sync():
        return postern.execute("systemctl start postern-tlsa-sync.service")[0]


    start_all()
    bootstrap_dnssec(ns, resolver, [postern], secure=["postern"])
    install_certificate("postern-a")
    start_postern(postern)

    with subtest("the timer exists (pinned far ahead); nothing is published yet"):
        postern.succeed("systemctl is-active postern-tlsa-sync.timer")
        unit = postern.succeed("systemctl show -P Unit postern-tlsa-sync.timer").strip()
        assert unit == "postern-tlsa-sync.service", unit
        postern.succeed("systemctl list-timers --all --no-pager | grep -q postern-tlsa-sync.timer")
        postern.fail("systemctl is-active postern-tlsa-sync.service")
        assert published() == [], published()

    with subtest("an update without TSIG is refused"):
        status, out = knsupdate(
            postern, "postern.test", [f"add {OWNER}. 5 TLSA 3 1 1 {'00' * 32}"], server=ADDR["ns"]
        )
        assert status != 0 or "REFUSED" in out or "NOTAUTH" in out, out
        assert published() == [], published()

    with subtest("tlsa sync publishes 3 1 1 for the served key, signed, idempotently"):
        assert served() == hash_a
        assert sync() == 0, "postern tlsa sync failed"
        postern.wait_until_succeeds(
            f"dig @{ADDR['ns']} +short TLSA {OWNER} | grep -q .", timeout=60
        )
        assert published() == [hash_a], published()
        postern.wait_until_succeeds(
            f"dig @{ADDR['resolver']} +dnssec TLSA {OWNER} | grep -q 'flags:.* ad[ ;]'",
            timeout=60,
        )
        assert_secure(postern, f"TLSA {OWNER}")
        assert sync() == 0
        assert published() == [hash_a], published()
        postern.succeed("postern tlsa status --config /etc/postern/config.json")

    with subtest("the sync runs beside the daemon, as its user: no root-owned file"):
        # postern-tlsa-sync requires postern.service (the daemon does the
        # step over its control socket) and runs as the daemon's user: no
        # file in the state directory (RocksDB's LOCK above all) is root's
        requires = postern.succeed("systemctl show -P Requires postern-tlsa-sync.service")
        assert "postern.service" in requires.split(), requires
        postern.succeed("systemctl is-active postern.service")
        postern.succeed("test -e /var/lib/private/postern")
        owned_by_root = postern.succeed("find /var/lib/private/postern -uid 0 -print")
        assert owned_by_root == "", f"root-owned files in the state directory:\n{owned_by_root}"

    with subtest("a new key: published first, served after holdTtls x TTL, removed last"):
        install_certificate("postern-b")
        first_both = None
        switched = None
        deadline = time.time() + 300
        while True:
            records = published()
            now_served = served()
            # the invariant of SPEC §2.7: DNS always matches what is served
            assert now_served in records, f"serving {now_served}, DNS has {records}"
            if hash_b in records and first_both is None:
                first_both = time.time()
                assert now_served == hash_a, "the new key was served before it was published"
                # a restart in the middle of the wait must not switch early
                postern.succeed("systemctl restart postern.service")
                postern.wait_for_open_port(25)
                assert served() == hash_a, "a restart during the wait switched early"
            if now_served == hash_b and switched is None:
                switched = time.time()
            if records == [hash_b] and now_served == hash_b:
                break
            assert time.time() < deadline, (
                f"rollover did not finish: DNS {records}, serving {now_served}"
            )
            sync()
            time.sleep(1)
        assert first_both is not None and switched is not None
        # holdTtls (2) x TTL (5 s), less the polling interval
        waited = switched - first_both
        assert waited >= 8, f"switched {waited:.1f} s after publishing"
        assert_secure(postern, f"TLSA {OWNER}")

    with subtest("a renewal that keeps the key: served at once, DNS unchanged"):
        before = postern.succeed(
            "openssl s_client -starttls smtp -connect 127.0.0.1:25 </dev/null 2>/dev/null"
            " | openssl x509 -noout -serial"
        )
        install_certificate("postern-b2")
        postern.wait_until_succeeds(
            "test \"$(openssl s_client -starttls smtp -connect 127.0.0.1:25 </dev/null 2>/dev/null"
            f" | openssl x509 -noout -serial)\" != '{before.strip()}'",
            timeout=60,
        )
        assert sync() == 0
        assert published() == [hash_b], published()
        assert served() == hash_b
  '';
}
