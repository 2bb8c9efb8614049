# The small internet the VM tests share (SPEC §4): a DNSSEC-signed
# authoritative server that accepts TSIG updates, a validating resolver
# trusting its keys, receiving MTAs, an HTTPS host for MTA-STS policies, and
# the postern node. Each test takes the nodes it needs.
#
# It mirrors the hermetic world of tests/world/ (Knot, Unbound, Postfix,
# nginx on 127.0.0.x): one signed parent zone `test.` is the only trust
# anchor; it delegates to the test domains, with DS records for the signed
# ones and none for the insecure ones, so that "insecure" is provable.
{ pkgs, lib }:

let
  addresses = {
    ns = "192.168.1.2";
    resolver = "192.168.1.3";
    web = "192.168.1.4";
    mx = "192.168.1.10";
    mxbroken = "192.168.1.11";
    mxinvalid = "192.168.1.12";
    postern = "192.168.1.20";
  };

  # A TSIG key for RFC 2136 updates of postern.test. It exists only inside
  # the test VMs, like nixpkgs' snakeoil certificates.
  tsig = {
    name = "postern";
    algorithm = "hmac-sha256";
    secret = "ybApI1N2nUYmLxXIYeBlcJGEoiomPT6jV0Cv7rZ8voQ=";
  };

  pki = import ./pki.nix { inherit pkgs; };
  zones = import ./zones.nix { inherit pkgs addresses pki; };
  nodes = import ./nodes.nix {
    inherit
      lib
      addresses
      pki
      zones
      tsig
      ;
  };
in
{
  inherit
    addresses
    tsig
    pki
    zones
    nodes
    ;

  # Python helpers prepended to every test script (see world.py).
  pythonHelpers = ''
    import json
    ADDR = json.loads(${builtins.toJSON (builtins.toJSON addresses)})
  ''
  + builtins.readFile ./world.py;
}
