# The VM tests of `nix flake check` (SPEC §4). Each builds its own small
# internet from ./common; `postern` is the NixOS module under test.
{ pkgs, postern }:

let
  inherit (pkgs) lib;
  world = import ./common { inherit pkgs lib; };
  runTest =
    file:
    pkgs.testers.runNixOSTest {
      imports = [ (import file { inherit pkgs lib world; }) ];
      defaults.imports = [ postern ];
    };
in
{
  vm-socket-activation = runTest ./socket-activation.nix;
  vm-dane = runTest ./dane.nix;
  vm-mta-sts = runTest ./mta-sts.nix;
  vm-starttls-fallback = runTest ./starttls-fallback.nix;
  vm-tlsa-update = runTest ./tlsa-update.nix;
}
