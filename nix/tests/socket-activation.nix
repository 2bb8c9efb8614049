# systemd binds, postern adopts: one socket unit per listener, file
# descriptors named after the listener ids (SPEC §2.1, §3, §4), `[::]` and
# `0.0.0.0` side by side (BindIPv6Only=ipv6-only), no capability in the
# daemon, secrets as credentials, a hardened unit.
# Hermetic twin: tests/systemd.rs (see README.md).
{
  pkgs,
  lib,
  world,
}:

{
  name = "postern-socket-activation";

  nodes.machine =
    { pkgs, ... }:
    {
      environment.systemPackages = [
        pkgs.swaks
        pkgs.openssl
      ];
      # Test-only secrets (a real system would use sops-nix, agenix…).
      environment.etc."postern-test/app".text = "s3cr3t-app-password";
      environment.etc."postern-test/app".mode = "0400";
      environment.etc."postern-test/key.pem".source = "${world.pki}/postern-a.key";
      environment.etc."postern-test/key.pem".mode = "0400";

      services.postern = {
        enable = true;
        credentials = {
          app = "/etc/postern-test/app";
          key = "/etc/postern-test/key.pem";
        };
        settings = {
          server.hostname = "mx.postern.test";
          # The shape of the module's default: each family on its own
          # socket, which needs BindIPv6Only=ipv6-only on the socket unit.
          server.listeners = {
            smtp.bind = [
              "0.0.0.0:25"
              "[::]:25"
            ];
            submissions = {
              bind = [
                "0.0.0.0:465"
                "[::]:465"
              ];
              tls.implicit = true;
            };
          };
          certificates.default = {
            cert = "%{file:${world.pki}/postern-a.pem}%";
            privateKey = "%{file:/run/credentials/postern.service/key}%";
          };
          session = {
            localDomains = [ "postern.test" ];
            relayNetworks = [ "127.0.0.0/8" ];
            auth.users.app.secret = "%{file:/run/credentials/postern.service/app}%";
          };
          # The test VMs have no nameserver in resolv.conf, and postern
          # builds its resolver at start. This test sends no mail out, so
          # the world's resolver address (as the other tests use it) need
          # not answer.
          resolver.nameservers = [ "${world.addresses.resolver}:53" ];
        };
      };
    };

  testScript = ''
    import re

    machine.wait_for_unit("sockets.target")

    with subtest("systemd holds one socket per listener, named by its id"):
        for name in ("smtp", "submissions"):
            unit = f"postern-{name}.socket"
            machine.succeed(f"systemctl is-active {unit}")
            fdname = machine.succeed(f"systemctl show -P FileDescriptorName {unit}").strip()
            assert fdname == name, f"{unit}: FileDescriptorName={fdname}"
            only6 = machine.succeed(f"systemctl show -P BindIPv6Only {unit}").strip()
            assert only6 == "ipv6-only", f"{unit}: BindIPv6Only={only6}"
        listen = machine.succeed("systemctl show -P Listen postern-smtp.socket")
        assert "0.0.0.0:25" in listen and "[::]:25" in listen, listen
        machine.succeed("ss -Htlnp 'sport = :25' | grep -q 'pid=1,'")
        # one IPv4 and one IPv6-only socket per port, both held by systemd
        for port in (25, 465):
            machine.succeed(f"ss -Htln4 'sport = :{port}' | grep -q '0.0.0.0:{port}'")
            machine.succeed(f"ss -Htln6 'sport = :{port}' | grep -q '\\[::\\]:{port}'")

    machine.wait_for_unit("postern.service")
    pid = machine.succeed("systemctl show -P MainPID postern.service").strip()

    with subtest("postern adopted the sockets instead of binding"):
        for port in (25, 465):
            owners = machine.succeed(f"ss -Htlnp 'sport = :{port}'")
            assert "pid=1," in owners and f"pid={pid}," in owners, owners

    with subtest("no capability, a dynamic user"):
        caps = machine.succeed(f"grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/{pid}/status")
        for line in caps.splitlines():
            assert int(line.split()[1], 16) == 0, caps
        assert machine.succeed(f"stat -c %U /proc/{pid}").strip() == "postern"

    with subtest("SMTP and implicit TLS on the adopted sockets, IPv4 and IPv6"):
        machine.succeed("swaks --server 127.0.0.1 --port 25 --quit-after EHLO")
        machine.succeed("swaks --server ::1 --port 25 --quit-after EHLO")
        for address in ("127.0.0.1", "[::1]"):
            machine.succeed(
                f"openssl s_client -connect {address}:465 -servername mx.postern.test"
                " -CAfile ${world.pki}/ca.pem -verify_return_error -brief </dev/null"
            )

    with subtest("a connection starts a stopped postern; the sockets stay"):
        machine.succeed("systemctl stop postern.service")
        machine.succeed("systemctl is-active postern-smtp.socket postern-submissions.socket")
        machine.succeed("swaks --server 127.0.0.1 --port 25 --quit-after EHLO")
        machine.wait_for_unit("postern.service")
        pid = machine.succeed("systemctl show -P MainPID postern.service").strip()

    with subtest("reload is SIGHUP: same process, ready again"):
        machine.succeed("systemctl reload postern.service")
        machine.succeed("systemctl is-active postern.service")
        assert machine.succeed("systemctl show -P MainPID postern.service").strip() == pid

    with subtest("secrets arrive as credentials, not in the configuration"):
        machine.succeed("test -s /run/credentials/postern.service/app")
        machine.succeed("test -s /run/credentials/postern.service/key")
        machine.fail("grep -q s3cr3t /etc/postern/config.json")
        machine.fail("grep -q 'PRIVATE KEY' /etc/postern/config.json")
        machine.succeed(
            "grep -qF '%{file:/run/credentials/postern.service/app}%' /etc/postern/config.json"
        )
        machine.succeed("postern check-config /etc/postern/config.json --offline")

    with subtest("systemd-analyze security: exposure at most 2.0"):
        out = machine.succeed("systemd-analyze security --no-pager postern.service")
        m = re.search(r"Overall exposure level for postern.service: ([0-9.]+)", out)
        assert m is not None and float(m.group(1)) <= 2.0, out

    with subtest("SIGTERM: a clean stop"):
        machine.succeed("systemctl stop postern.service")
        result = machine.succeed("systemctl show -P Result postern.service").strip()
        assert result == "success", result
  '';
}
