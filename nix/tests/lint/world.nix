# What the static checks of nix/tests/lint/check.py read from the VM tests,
# evaluated with `nix-instantiate --eval --strict --json` and nothing else:
# no nixpkgs, no builds. `pkgs` is a stand-in whose derivations are plain
# attribute sets (their paths are fake), so the test scripts evaluate to
# the text the NixOS test driver would run, store paths aside.
#
#   { tests.<check> = { name; nodes = [ … ]; script; };
#     zonesScript = "…"; }       # the build script that writes the zone files
let
  # Nothing the scripts are made of needs nixpkgs' lib.
  lib = throw "nix/tests/lint/world.nix: nixpkgs' lib is not available here";

  fakeDerivation = name: attrs: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
    passthru = attrs;
  };

  pkgs = {
    inherit lib;
    runCommand = name: env: script: fakeDerivation name { inherit env script; };
    writeText = name: text: fakeDerivation name { inherit text; };
    # what default.nix hands each test to: keep the test module as it is
    testers.runNixOSTest = test: test;
  };

  checks = import ../default.nix {
    inherit pkgs;
    postern = { };
  };
  world = import ../common { inherit pkgs lib; };

  testOf =
    check:
    let
      test = builtins.head check.imports;
    in
    {
      inherit (test) name;
      nodes = builtins.attrNames test.nodes;
      script =
        if builtins.isString test.testScript then
          test.testScript
        else
          throw "${test.name}: testScript is a function; nix/tests/lint/world.nix reads strings only";
    };
in
{
  tests = builtins.mapAttrs (_: testOf) checks;
  zonesScript = world.zones.passthru.script;
}
