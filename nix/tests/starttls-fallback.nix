# The STARTTLS fallback chain of SPEC §2.3: the `tls` expression picks
# `default`, then `invalid-tls` after a TLS failure, then `disable-tls`.
# A self-signed MX is delivered by `invalid-tls` (still over TLS); an MX
# whose handshakes always fail is delivered in plaintext only by
# `disable-tls`, after two failed handshakes.
# Hermetic twin: tests/world_delivery.rs (see README.md).
{
  pkgs,
  lib,
  world,
}:

{
  name = "postern-starttls-fallback";

  nodes = {
    inherit (world.nodes)
      ns
      resolver
      mxbroken
      mxinvalid
      postern
      ;
  };

  testScript = world.pythonHelpers + ''
    start_all()
    bootstrap_dnssec(ns, resolver, [postern], secure=["badtls", "invalidcert", "postern"])
    mxbroken.wait_for_unit("postfix.service")
    mxinvalid.wait_for_unit("postfix.service")

    with subtest("the world: signed zones without TLSA, a broken and a self-signed receiver"):
        assert_secure(postern, "MX badtls.test")
        assert_secure(postern, "MX invalidcert.test")
        # nothing below mx.badtls.test: no such name, proven (no TLSA)
        assert_secure_nxdomain(postern, "TLSA _25._tcp.mx.badtls.test")
        assert_secure_nxdomain(postern, "TLSA _25._tcp.mx.invalidcert.test")
        postern.succeed(f"swaks --server {ADDR['mxbroken']} --quit-after EHLO | grep -q STARTTLS")
        postern.fail(
            f"openssl s_client -starttls smtp -connect {ADDR['mxbroken']}:25 -brief </dev/null"
        )
        postern.succeed(
            f"openssl s_client -starttls smtp -connect {ADDR['mxinvalid']}:25 -brief </dev/null"
        )

    start_postern(postern)

    with subtest("the first attempt uses `default`: no delivery to an invalid certificate"):
        assert_verdict(postern, "invalidcert.test", "defer")

    with subtest("self-signed MX: default fails, invalid-tls delivers over TLS"):
        send_mail(postern, "alice@invalidcert.test", "fallback-invalid-tls")
        wait_delivered(mxinvalid, "fallback-invalid-tls", tls=True)
        attempts = postern.succeed(
            "journalctl -u postern.service -o cat | grep invalidcert.test"
        )
        assert "invalid-tls" in attempts, attempts
        assert "disable-tls" not in attempts, attempts

    with subtest("broken handshakes: default, invalid-tls, then plaintext by disable-tls"):
        send_mail(postern, "alice@badtls.test", "fallback-disable-tls")
        wait_delivered(mxbroken, "fallback-disable-tls", tls=False)
        attempts = postern.succeed("journalctl -u postern.service -o cat | grep badtls.test")
        assert "invalid-tls" in attempts and "disable-tls" in attempts, attempts
        failures = mxbroken.succeed(
            "journalctl -o cat"
            " | grep -E -c 'SSL_accept error|lost connection after STARTTLS' || true"
        )
        assert int(failures.strip()) >= 2, f"expected two failed handshakes first, saw {failures}"
  '';
}
