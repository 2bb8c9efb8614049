# MTA-STS (RFC 8461, SPEC §2.3): `enforce` with an MX that matches the
# policy and has a PKIX-valid certificate is delivered with verified TLS;
# `enforce` with an MX outside the policy, or with a certificate for another
# name, is deferred; the daemon's cached policy outlives its HTTPS host and
# a restart of postern.
# Hermetic twin: tests/world_mta_sts.rs (see README.md).
{
  pkgs,
  lib,
  world,
}:

{
  name = "postern-mta-sts";

  nodes = {
    inherit (world.nodes)
      ns
      resolver
      web
      mx
      postern
      ;
  };

  testScript = world.pythonHelpers + ''
    import time

    start_all()
    bootstrap_dnssec(ns, resolver, [postern], secure=["postern"])
    mx.wait_for_unit("postfix.service")
    web.wait_for_unit("nginx.service")

    with subtest("the world: insecure zones, policies served with the test CA"):
        assert_insecure(postern, "MX sts-enforce.test")
        assert_insecure(postern, "TXT _mta-sts.sts-enforce.test")
        for domain in ("sts-enforce.test", "sts-mxmismatch.test", "sts-wrongname.test"):
            policy = postern.succeed(
                "curl -sSf --cacert ${world.pki}/ca.pem"
                f" --resolve mta-sts.{domain}:443:{ADDR['web']}"
                f" https://mta-sts.{domain}/.well-known/mta-sts.txt"
            )
            assert "mode: enforce" in policy, policy

    start_postern(postern)

    with subtest("enforce, MX in policy, valid certificate: verified TLS"):
        assert_verdict(postern, "sts-enforce.test", "mta-sts")
        send_mail(postern, "alice@sts-enforce.test", "sts-good")
        wait_delivered(mx, "sts-good", tls=True)
        wait_for_log_line(
            postern, ['domain="sts-enforce.test"', 'policy="mta-sts"', "delivered"]
        )

    with subtest("enforce, MX outside the policy: deferred"):
        assert_verdict(postern, "sts-mxmismatch.test", "defer")
        send_mail(postern, "alice@sts-mxmismatch.test", "sts-mx-mismatch")

    with subtest("enforce, certificate for another name: deferred"):
        assert_verdict(postern, "sts-wrongname.test", "defer")
        send_mail(postern, "alice@sts-wrongname.test", "sts-name-mismatch")
        wait_for_attempts(postern, "sts-wrongname.test", 3)
        time.sleep(15)
        wait_for_attempts(postern, "sts-mxmismatch.test", 3)
        assert_not_delivered(mx, "sts-name-mismatch")
        assert_not_delivered(mx, "sts-mx-mismatch")
        assert_deferred(postern, "alice@sts-wrongname.test", "mta-sts", attempts=3)
        assert_deferred(postern, "alice@sts-mxmismatch.test", "mta-sts", attempts=3)

    # `postern probe` opens no store and so knows no cached policy: what is
    # checked here is the daemon, by its journal and its queue.
    with subtest("the cached policy outlives its host and a restart of postern"):
        web.succeed("systemctl stop nginx.service")
        postern.fail(
            f"curl -sS --max-time 5 --resolve mta-sts.sts-enforce.test:443:{ADDR['web']}"
            " https://mta-sts.sts-enforce.test/.well-known/mta-sts.txt"
        )
        postern.succeed("systemctl restart postern.service")
        postern.wait_for_unit("postern.service")
        postern.wait_for_open_port(25)
        send_mail(postern, "alice@sts-enforce.test", "sts-cached-policy")
        wait_delivered(mx, "sts-cached-policy", tls=True)
        # the attempt of this invocation, under the cached enforce policy
        wait_for_log_line(
            postern,
            ['domain="sts-enforce.test"', 'policy="mta-sts"', "delivered"],
            current=True,
        )
        assert_not_queued(postern, "alice@sts-enforce.test")
        # …which still defers the MX outside it, attempt after attempt
        before, _ = queued_recipient(postern, "alice@sts-mxmismatch.test")

        def retried_since(_last_try):
            now, _ = queued_recipient(postern, "alice@sts-mxmismatch.test")
            return now["attempts"] > before["attempts"]

        retry(retried_since, 120)
        assert_deferred(postern, "alice@sts-mxmismatch.test", "mta-sts")
        assert_not_delivered(mx, "sts-mx-mismatch")
  '';
}
