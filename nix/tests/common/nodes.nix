# NixOS configurations of the world's machines. Every machine sits on the
# test VLAN with a fixed address (default.nix), so zone files can be written
# before the machines exist.
{
  lib,
  addresses,
  pki,
  zones,
  tsig,
}:

let
  onVlan = address: {
    networking.interfaces.eth1.ipv4.addresses = lib.mkForce [
      {
        inherit address;
        prefixLength = 24;
      }
    ];
    networking.useDHCP = false;
  };

  # A receiving MTA: Postfix accepting mail for `domains`, delivering every
  # recipient to the mailbox of `alice`, and writing into the Received
  # header whether the message came over TLS.
  receiver =
    {
      address,
      domains,
      tls,
    }:
    { pkgs, ... }:
    {
      imports = [ (onVlan address) ];
      networking.firewall.allowedTCPPorts = [ 25 ];
      users.users.alice.isNormalUser = true;
      services.postfix = {
        enable = true;
        settings.main = {
          myhostname = "mx.test";
          mydestination = [ "localhost" ] ++ domains;
          mynetworks = [ "127.0.0.0/8" ];
          inet_interfaces = "all";
          inet_protocols = "ipv4";
          local_recipient_maps = "";
          luser_relay = "alice";
          smtpd_tls_received_header = "yes";
          smtpd_tls_loglevel = "1";
        }
        // tls;
      };
      environment.systemPackages = [ pkgs.swaks ];
    };
in
{
  # Knot: authoritative for test. and its children, signing them all
  # (automatic keys, default policy), accepting DS updates from itself and
  # TLSA updates for postern.test signed with the TSIG key.
  ns =
    { pkgs, ... }:
    {
      imports = [ (onVlan addresses.ns) ];
      networking.firewall.allowedTCPPorts = [ 53 ];
      networking.firewall.allowedUDPPorts = [ 53 ];
      environment.systemPackages = [ pkgs.dig ];
      services.knot = {
        enable = true;
        keyFiles = [
          (pkgs.writeText "postern-tsig.conf" ''
            key:
              - id: ${tsig.name}
                algorithm: ${tsig.algorithm}
                secret: ${tsig.secret}
          '')
        ];
        settings = {
          server.listen = [ "0.0.0.0@53" ];
          # Journal, KASP and timer databases: the unit's StateDirectory.
          database.storage = "/var/lib/knot";
          log.syslog.any = "info";
          acl = {
            local_update = {
              address = [ "127.0.0.1" ];
              action = "update";
            };
            postern_update = {
              key = tsig.name;
              action = "update";
              update-type = [ "TLSA" ];
            };
          };
          template.default = {
            storage = "${zones}";
            dnssec-signing = true;
            # Zone files are read-only inputs; changes live in the journal.
            zonefile-sync = -1;
            zonefile-load = "difference-no-serial";
            journal-content = "all";
            semantic-checks = true;
          };
          zone =
            lib.genAttrs
              [
                "dane-ok.test"
                "dane-bad.test"
                "bogus.test"
                "sts-enforce.test"
                "sts-mxmismatch.test"
                "sts-wrongname.test"
                "badtls.test"
                "invalidcert.test"
              ]
              (domain: {
                file = "${domain}.zone";
              })
            // {
              "test" = {
                file = "test.zone";
                acl = [ "local_update" ];
              };
              "postern.test" = {
                file = "postern.test.zone";
                acl = [ "postern_update" ];
              };
            };
        };
      };
    };

  # Unbound: validates with the trust anchor of test. only. The anchor is
  # written by the test script (bootstrap_dnssec), which then starts it.
  resolver =
    { pkgs, ... }:
    {
      imports = [ (onVlan addresses.resolver) ];
      networking.firewall.allowedTCPPorts = [ 53 ];
      networking.firewall.allowedUDPPorts = [ 53 ];
      environment.systemPackages = [ pkgs.dig ];
      services.unbound = {
        enable = true;
        enableRootTrustAnchor = false;
        resolveLocalQueries = false;
        # The anchor file does not exist when the system is built.
        checkconf = false;
        settings = {
          server = {
            interface = [ "0.0.0.0" ];
            access-control = [
              "127.0.0.0/8 allow"
              "192.168.1.0/24 allow"
            ];
            trust-anchor-file = "/var/lib/unbound/test.anchor";
            do-not-query-localhost = false;
            val-log-level = 2;
            # The TLSA rollover test watches records with a 5 s TTL.
            cache-max-ttl = 5;
            cache-max-negative-ttl = 1;
          };
          stub-zone = [
            {
              name = "test.";
              stub-addr = [ addresses.ns ];
            }
          ];
        };
      };
      systemd.services.unbound.wantedBy = lib.mkForce [ ];
    };

  # nginx serving the MTA-STS policies of sts-enforce.test and sts-wrongname.test with a
  # certificate of the test CA.
  web =
    { pkgs, ... }:
    let
      policy =
        mxs:
        pkgs.writeText "mta-sts.txt" (
          lib.concatMapStrings (line: line + "\r\n") (
            [
              "version: STSv1"
              "mode: enforce"
            ]
            ++ map (mx: "mx: ${mx}") mxs
            ++ [ "max_age: 86400" ]
          )
        );
      vhost = mxs: {
        onlySSL = true;
        sslCertificate = "${pki}/web.pem";
        sslCertificateKey = "${pki}/web.key";
        locations."= /.well-known/mta-sts.txt" = {
          alias = "${policy mxs}";
          extraConfig = ''
            types { }
            default_type text/plain;
          '';
        };
      };
    in
    {
      imports = [ (onVlan addresses.web) ];
      networking.firewall.allowedTCPPorts = [ 443 ];
      services.nginx = {
        enable = true;
        virtualHosts."mta-sts.sts-enforce.test" = vhost [ "mx.sts-enforce.test" ];
        virtualHosts."mta-sts.sts-mxmismatch.test" = vhost [
          "mx.elsewhere.sts-mxmismatch.test"
          "*.other.sts-mxmismatch.test"
        ];
        virtualHosts."mta-sts.sts-wrongname.test" = vhost [ "mx.sts-wrongname.test" ];
      };
    };

  # The receiver of the signed and MTA-STS domains: a certificate of the test
  # CA for every MX name but mx.sts-wrongname.test.
  mx = receiver {
    address = addresses.mx;
    domains = [
      "dane-ok.test"
      "dane-bad.test"
      "bogus.test"
      "sts-enforce.test"
      "sts-mxmismatch.test"
      "sts-wrongname.test"
    ];
    tls = {
      smtpd_tls_security_level = "may";
      smtpd_tls_chain_files = [
        "${pki}/mx.key"
        "${pki}/mx.pem"
      ];
    };
  };

  # Offers STARTTLS, but no protocol version postern speaks (TLS 1.2 and
  # 1.3 only): every handshake fails.
  mxbroken = receiver {
    address = addresses.mxbroken;
    domains = [ "badtls.test" ];
    tls = {
      smtpd_tls_security_level = "may";
      smtpd_tls_chain_files = [
        "${pki}/mx.key"
        "${pki}/mx.pem"
      ];
      smtpd_tls_protocols = "!SSLv2, !SSLv3, !TLSv1.2, !TLSv1.3";
      smtpd_tls_mandatory_protocols = "!SSLv2, !SSLv3, !TLSv1.2, !TLSv1.3";
    };
  };

  # A working TLS server whose certificate no CA vouches for.
  mxinvalid = receiver {
    address = addresses.mxinvalid;
    domains = [ "invalidcert.test" ];
    tls = {
      smtpd_tls_security_level = "may";
      smtpd_tls_chain_files = [
        "${pki}/selfsigned.key"
        "${pki}/selfsigned.pem"
      ];
    };
  };

  # The postern node: postern relaying for loopback, validating DNSSEC in
  # process with the anchor of test., trusting the test CA for PKIX, with a
  # short retry schedule and the STARTTLS fallback chain of SPEC §2.3.
  # Tests add to it with `postern = { imports = [ world.nodes.postern ]; … }`.
  postern =
    { pkgs, ... }:
    {
      imports = [ (onVlan addresses.postern) ];
      networking.firewall.allowedTCPPorts = [
        25
        465
      ];
      environment.systemPackages = [
        pkgs.swaks
        pkgs.dig
        pkgs.knot-dns
        pkgs.openssl
        pkgs.curl
        pkgs.jq
      ];

      # Test-only secrets, installed as root-only files outside the store
      # path strings the module sees (a real system uses sops-nix, agenix…).
      environment.etc."postern-test/tsig".text = tsig.secret;
      environment.etc."postern-test/tsig".mode = "0400";
      environment.etc."postern-test/key.pem".source = "${pki}/postern-a.key";
      environment.etc."postern-test/key.pem".mode = "0400";

      services.postern = {
        enable = true;
        credentials = {
          tsig = "/etc/postern-test/tsig";
          key = "/etc/postern-test/key.pem";
        };
        settings = {
          server.hostname = "mx.postern.test";
          server.listeners = {
            smtp.bind = [ "0.0.0.0:25" ];
            submissions = {
              bind = "0.0.0.0:465";
              tls.implicit = true;
            };
          };
          certificates.default = {
            cert = "%{file:${pki}/postern-a.pem}%";
            privateKey = "%{file:/run/credentials/postern.service/key}%";
          };
          session = {
            localDomains = [ "postern.test" ];
            relayNetworks = [
              "127.0.0.0/8"
              "::1/128"
            ];
          };
          resolver = {
            nameservers = [ "${addresses.resolver}:53" ];
            dnssec = "validate";
            trustAnchors = "/var/lib/postern-anchors/test.ds";
          };
          outbound = {
            caFile = "${pki}/ca.pem";
            retry = [ "5s" ];
            tls = {
              match = [
                {
                  "if" = "retry_num > 1 && last_error == 'tls'";
                  "then" = "'disable-tls'";
                }
                {
                  "if" = "retry_num > 0 && last_error == 'tls'";
                  "then" = "'invalid-tls'";
                }
              ];
              "else" = "'default'";
            };
            tlsStrategies.disable-tls.startTls = "disable";
          };
          mtaSts.caFile = "${pki}/ca.pem";
        };
      };

      # The trust anchor exists only after bootstrap_dnssec: the test script
      # starts postern (a connection to a socket would too).
      systemd.services.postern.wantedBy = lib.mkForce [ ];
    };
}
