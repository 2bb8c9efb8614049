# DANE for outbound SMTP (RFC 7672, SPEC §2.3): a correct TLSA record is
# delivered with the verdict `dane`; a wrong TLSA record and a bogus zone
# are deferred and never sent in plaintext.
# Hermetic twin: tests/world_dane.rs (see README.md).
{
  pkgs,
  lib,
  world,
}:

{
  name = "postern-dane";

  nodes = {
    inherit (world.nodes)
      ns
      resolver
      mx
      postern
      ;
  };

  testScript = world.pythonHelpers + ''
    import time

    start_all()
    bootstrap_dnssec(
        ns, resolver, [postern], secure=["dane-ok", "dane-bad", "postern"], bogus=["bogus"]
    )
    mx.wait_for_unit("postfix.service")

    with subtest("the world: secure, secure-but-wrong and bogus, as designed"):
        assert_secure(postern, "MX dane-ok.test")
        assert_secure(postern, "TLSA _25._tcp.mx.dane-ok.test")
        assert_secure(postern, "TLSA _25._tcp.mx.dane-bad.test")
        assert_bogus(postern, "MX bogus.test")

    start_postern(postern)

    with subtest("probe: the verdicts, before any mail"):
        assert_verdict(postern, "dane-ok.test", "dane")
        assert_verdict(postern, "dane-bad.test", "defer")
        assert_verdict(postern, "bogus.test", "defer")

    with subtest("good TLSA: delivered, over TLS"):
        send_mail(postern, "alice@dane-ok.test", "dane-good")
        wait_delivered(mx, "dane-good", tls=True)
        postern.wait_until_succeeds(
            "! postern queue list --json --config /etc/postern/config.json"
            " | grep -q alice@dane-ok.test"
        )

    with subtest("wrong TLSA, bogus zone: deferred, retried, never plaintext"):
        send_mail(postern, "alice@dane-bad.test", "dane-wrong-tlsa")
        send_mail(postern, "alice@bogus.test", "dane-bogus")
        # retry is 5 s: let several attempts happen
        wait_for_attempts(postern, "dane-bad.test", 3)
        wait_for_attempts(postern, "bogus.test", 3)
        time.sleep(15)
        assert_not_delivered(mx, "dane-wrong-tlsa")
        assert_not_delivered(mx, "dane-bogus")
        assert_queued(postern, "alice@dane-bad.test")
        assert_queued(postern, "alice@bogus.test")
        # the receiver accepted exactly one message: dane-good
        accepted = mx.succeed("journalctl -o cat | grep -c 'from=<sender@postern.test>' || true")
        assert int(accepted.strip()) == 1, accepted
  '';
}
