# MTA-STS (RFC 8461, SPEC §2.3): `enforce` with an MX that matches the
# policy and has a PKIX-valid certificate is delivered with verified TLS;
# `enforce` with an MX outside the policy, or with a certificate for another
# name, is deferred; a cached policy outlives its HTTPS host.
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
        assert_queued(postern, "alice@sts-wrongname.test")
        assert_queued(postern, "alice@sts-mxmismatch.test")

    with subtest("the cached policy survives the policy host going away"):
        web.succeed("systemctl stop nginx.service")
        assert_verdict(postern, "sts-enforce.test", "mta-sts")
        send_mail(postern, "alice@sts-enforce.test", "sts-cached-policy")
        wait_delivered(mx, "sts-cached-policy", tls=True)
  '';
}
