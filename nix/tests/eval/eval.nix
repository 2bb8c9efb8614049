# Evaluation test of nix/module.nix and nix/package.nix: builds nothing,
# needs only nixpkgs' lib.
#
#   nix-instantiate --eval --strict --json nix/tests/eval/eval.nix \
#     --argstr nixpkgsLib /path/to/nixpkgs        # or /path/to/nixpkgs/lib
#
# Evaluates the module under several configurations against the stand-ins
# of ./stubs.nix and returns { passed; failed; results = [ { name; ok;
# detail; } ]; }. ./run.sh prints it and sets the exit status.
{ nixpkgsLib }:

let
  lib = import (
    if builtins.pathExists (nixpkgsLib + "/lib/default.nix") then
      nixpkgsLib + "/lib"
    else
      nixpkgsLib
  );
  stubs = import ./stubs.nix { inherit lib; };

  evalWith =
    pkgs: config:
    (lib.evalModules {
      modules = [
        stubs.module
        ../../module.nix
        config
      ];
      specialArgs.pkgs = pkgs;
    }).config;
  evalConfig = evalWith stubs.pkgs;

  # ------------------------------------------------------------ configurations

  # What users write: two listeners, secrets as files, the TLSA timer.
  base = {
    services.postern = {
      enable = true;
      settings = {
        server.hostname = "mx1.example.org";
        server.listeners = {
          smtp.bind = [
            "0.0.0.0:25"
            "[::]:25"
          ];
          submissions = {
            bind = "[::]:465";
            tls.implicit = true;
            socket.backlog = 2048;
          };
          management = {
            bind = "127.0.0.1:8080";
            protocol = "http";
          };
        };
        session.localDomains = [ "example.org" ];
        session.auth.users.app.secret = "%{file:/run/credentials/postern.service/app}%";
        certificates.default = {
          cert = "%{file:/run/credentials/postern.service/cert}%";
          privateKey = "%{file:/run/credentials/postern.service/key}%";
        };
        tlsa.records.mx1 = {
          host = "mx1.example.org";
          certificate = "default";
          usages = [ "3 1 1" ];
          provider = "ns1";
        };
        tlsa.providers.ns1 = {
          type = "rfc2136";
          server = "192.0.2.53:53";
          zone = "example.org";
          key = {
            name = "postern";
            algorithm = "hmac-sha256";
            secret = "%{file:/run/credentials/postern.service/tsig}%";
          };
        };
      };
      credentials = {
        tsig = "/run/secrets/postern-tsig";
        app = "/run/secrets/postern-app";
        cert = "/etc/ssl/mx1/fullchain.pem";
        key = "/run/secrets/mx1-key.pem";
      };
      tlsa.autoUpdate.enable = true;
      openFirewall = true;
    };
  };

  with' = extra: {
    imports = [
      base
      extra
    ];
  };

  # A DKIM key referred to by its credential name (SPEC §2.6).
  dkimKey = name: {
    services.postern.settings.dkim."example.org" = {
      selector = "s1";
      algorithm = "ed25519-sha256";
      privateKey = "%{file:/run/credentials/postern.service/${name}}%";
    };
  };

  full = evalConfig base;
  noTimer = evalConfig (with' { services.postern.tlsa.autoUpdate.enable = lib.mkForce false; });
  storePath = "/nix/store/${lib.fixedWidthString 32 "0" "a"}-tsig";
  storeCredential = evalConfig (with' {
    services.postern.credentials.tsig = lib.mkForce storePath;
  });
  pathLiteralCredential = evalConfig (with' { services.postern.credentials.extra = ./stubs.nix; });
  undeclared = evalConfig (with' (dkimKey "dkim"));
  # Credentials the unit gets from systemd directly, not from `credentials`.
  encrypted = evalConfig (with' {
    imports = [ (dkimKey "dkim") ];
    systemd.services.postern.serviceConfig.LoadCredentialEncrypted =
      "dkim:/etc/credstore.encrypted/postern-dkim";
  });
  imported = evalConfig (with' {
    imports = [ (dkimKey "postern.dkim.s1") ];
    systemd.services.postern.serviceConfig.ImportCredential = [ "postern.dkim.*" ];
  });
  importedOther = evalConfig (with' {
    imports = [ (dkimKey "other.dkim") ];
    systemd.services.postern.serviceConfig.ImportCredential = [ "postern.dkim.*" ];
  });
  inlineSecret = evalConfig (with' {
    services.postern.settings.tlsa.providers.ns1.key.secret = lib.mkForce "c2VjcmV0LXRzaWcta2V5";
  });
  noCheck = evalConfig (with' { services.postern.checkConfig = false; });
  cross = evalWith stubs.crossPkgs base;
  otherProgram = evalConfig (with' {
    services.postern.package = stubs.fakeDerivation "postern-fork-0.1.0" {
      meta.mainProgram = "postern-fork";
    };
  });
  noSockets = evalConfig (with' { services.postern.socketActivation = false; });
  noSocketsHighPorts = evalConfig {
    services.postern = {
      enable = true;
      socketActivation = false;
      settings.server.listeners.smtp.bind = "127.0.0.1:2525";
    };
  };
  acme = evalConfig {
    services.postern = {
      enable = true;
      acmeCertificate = "mx1.example.org";
      tlsa.autoUpdate.enable = true;
      settings.tlsa.records.mx1 = {
        host = "mx1.example.org";
        provider = "ns1";
      };
    };
  };
  acmeNoTimer = evalConfig {
    services.postern = {
      enable = true;
      acmeCertificate = "mx1.example.org";
    };
  };
  withExport = evalConfig (with' {
    services.postern.settings.tlsa.rollover.export = {
      cert = "/var/lib/postern-export/fullchain.pem";
      privateKey = "/var/lib/postern-export/key.pem";
      reload = [ "true" ];
    };
  });
  defaults = evalConfig { services.postern.enable = true; };
  defaultsNoSockets = evalConfig {
    services.postern = {
      enable = true;
      socketActivation = false;
    };
  };
  disabled = evalConfig { services.postern.enable = false; };

  package = import ../../package.nix stubs.packageArgs;

  # ------------------------------------------------------------ helpers

  svc = c: c.systemd.services.postern.serviceConfig;
  daemon = full.systemd.services.postern;
  sync = c: c.systemd.services.postern-tlsa-sync;
  syncSvc = c: (sync c).serviceConfig;
  sockets = full.systemd.sockets;
  smtp = sockets.postern-smtp;
  submissions = sockets.postern-submissions;
  failing = c: map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  failingJSON = c: builtins.toJSON (failing c);
  json = stubs.pkgs.formats.json { };
  settingsFile = c: json.generate "postern-settings.json" c.services.postern.settings;
  renderedText = c: (settingsFile c).json;
  rendered = c: builtins.fromJSON (renderedText c);
  script = c: c.services.postern.configFile.script;
  contains = needle: haystack: lib.hasInfix needle haystack;

  # Every unit of a configuration that runs the postern binary: none may
  # run it as root, or it would leave root-owned files (RocksDB's LOCK) in
  # the state directory.
  runsPostern = s: contains "/bin/postern" (s.serviceConfig.ExecStart or "");
  unitsRunningPostern = c: lib.filterAttrs (_: runsPostern) c.systemd.services;
  acmeCert = acme.security.acme.certs."mx1.example.org";
  sameUserAndState = [
    "DynamicUser"
    "User"
    "Group"
    "SupplementaryGroups"
    "StateDirectory"
    "StateDirectoryMode"
    "ReadWritePaths"
    "LoadCredential"
    "UMask"
  ];

  check = name: ok: detail: { inherit name ok detail; };
  eq =
    name: actual: expected:
    check name (actual == expected)
      "expected ${builtins.toJSON expected}, got ${builtins.toJSON actual}";

  exe = "${stubs.pkgs.postern}/bin/postern";
  credentialPaths = lib.attrValues full.services.postern.credentials;
  credentialsDir = "/run/credentials/postern.service";

  # ------------------------------------------------------------ the checks

  results = [
    # --- socket activation: one socket unit per listener
    (eq "sockets: one unit per listener" (lib.attrNames sockets) [
      "postern-management"
      "postern-smtp"
      "postern-submissions"
    ])
    (eq "sockets: smtp ListenStream, both families" smtp.listenStreams [
      "0.0.0.0:25"
      "[::]:25"
    ])
    (eq "sockets: smtp FileDescriptorName" smtp.socketConfig.FileDescriptorName "smtp")
    (eq "sockets: submissions ListenStream" submissions.listenStreams [ "[::]:465" ])
    (eq "sockets: submissions FileDescriptorName" submissions.socketConfig.FileDescriptorName
      "submissions"
    )
    (eq "sockets: Service= is postern.service"
      (lib.unique (lib.mapAttrsToList (_: s: s.socketConfig.Service) sockets))
      [ "postern.service" ]
    )
    # `[::]` is IPv6 only, as when postern binds itself (IPV6_V6ONLY), so
    # that `[::]:25` and `0.0.0.0:25` can both be bound.
    (eq "sockets: BindIPv6Only=ipv6-only on every socket unit"
      (lib.unique (lib.mapAttrsToList (_: s: s.socketConfig.BindIPv6Only or null) sockets))
      [ "ipv6-only" ]
    )
    (eq "sockets: started by sockets.target" smtp.wantedBy [ "sockets.target" ])
    (eq "sockets: listener socket options become systemd's" submissions.socketConfig.Backlog 2048)
    (eq "service: inherits every listener socket" (svc full).Sockets [
      "postern-management.socket"
      "postern-smtp.socket"
      "postern-submissions.socket"
    ])
    (check "service: requires and is ordered after its sockets" (lib.all (
      s:
      lib.elem s full.systemd.services.postern.requires
      && lib.elem s full.systemd.services.postern.after
    ) (svc full).Sockets) "requires=${toString full.systemd.services.postern.requires}")
    (eq "no socket activation: no socket units" noSockets.systemd.sockets { })
    (check "no socket activation: no Sockets=" (!((svc noSockets) ? Sockets)) "Sockets is set")

    # --- the default listener: IPv4 and IPv6, whoever binds
    (eq "listeners: the default binds both families" (rendered defaults).server.listeners {
      smtp = {
        bind = [
          "0.0.0.0:25"
          "[::]:25"
        ];
        protocol = "smtp";
      };
    })
    (eq "listeners: the default socket unit listens on both families"
      defaults.systemd.sockets.postern-smtp.listenStreams
      [
        "0.0.0.0:25"
        "[::]:25"
      ]
    )
    (eq "listeners: the default binds both families without socket activation too"
      (rendered defaultsNoSockets).server.listeners.smtp.bind
      [
        "0.0.0.0:25"
        "[::]:25"
      ]
    )

    # --- capabilities
    (eq "capabilities: none when socket-activated" (svc full).CapabilityBoundingSet [ "" ])
    (eq "capabilities: no ambient ones when socket-activated" (svc full).AmbientCapabilities [ ])
    (eq "capabilities: CAP_NET_BIND_SERVICE only when binding port 25 itself"
      [
        (svc noSockets).CapabilityBoundingSet
        (svc noSockets).AmbientCapabilities
        (svc noSockets).PrivateUsers
      ]
      [
        [ "CAP_NET_BIND_SERVICE" ]
        [ "CAP_NET_BIND_SERVICE" ]
        false
      ]
    )
    (eq "capabilities: none without socket activation on a high port"
      [
        (svc noSocketsHighPorts).CapabilityBoundingSet
        (svc noSocketsHighPorts).AmbientCapabilities
      ]
      [
        [ "" ]
        [ ]
      ]
    )

    # --- credentials
    (eq "credentials: one LoadCredential entry each" (svc full).LoadCredential [
      "app:/run/secrets/postern-app"
      "cert:/etc/ssl/mx1/fullchain.pem"
      "key:/run/secrets/mx1-key.pem"
      "tsig:/run/secrets/postern-tsig"
    ])
    (eq "credentials: the TLSA sync unit loads them too" (syncSvc full).LoadCredential
      (svc full).LoadCredential
    )
    (eq "credentials: the sync unit sees them under the daemon's path"
      (syncSvc full).BindReadOnlyPaths
      [ "%d:${credentialsDir}" ]
    )
    (check "credentials: a store path is rejected by an assertion" (lib.any (
      contains "services.postern.credentials.tsig is a Nix store path"
    ) (failing storeCredential)) (failingJSON storeCredential))
    (check "credentials: a Nix path literal is passed as its path, not copied to the store"
      (lib.elem "extra:${toString ./stubs.nix}" (svc pathLiteralCredential).LoadCredential)
      (builtins.toJSON (svc pathLiteralCredential).LoadCredential)
    )
    (check "credentials: a reference to an undeclared credential is rejected"
      (lib.any (contains "dkim") (failing undeclared))
      (failingJSON undeclared)
    )
    (eq "credentials: one from LoadCredentialEncrypted= counts as declared" (failing encrypted) [ ])
    (eq "credentials: one matching an ImportCredential= glob counts as declared" (failing imported)
      [ ]
    )
    (check "credentials: one matching no ImportCredential= glob is still rejected"
      (lib.any (contains "other.dkim") (failing importedOther))
      (failingJSON importedOther)
    )
    (eq "credentials: the sync unit loads the encrypted ones too"
      [
        ((syncSvc encrypted).LoadCredentialEncrypted or null)
        ((syncSvc imported).ImportCredential or null)
      ]
      [
        [ "dkim:/etc/credstore.encrypted/postern-dkim" ]
        [ "postern.dkim.*" ]
      ]
    )
    (check "credentials: a secret written inline is rejected"
      (lib.any (contains "tlsa.providers.ns1.key.secret") (failing inlineSecret))
      (failingJSON inlineSecret)
    )
    (eq "credentials: the full example passes every assertion" (failing full) [ ])
    (eq "credentials: so do the defaults" (failing defaults) [ ])

    # --- the rendered configuration
    (eq "json: listeners as written" (rendered full).server.listeners.smtp.bind [
      "0.0.0.0:25"
      "[::]:25"
    ])
    (eq "json: storage path default" (rendered full).storage.path "/var/lib/postern")
    (eq "json: control socket in the runtime directory" (rendered full).control.socket
      "/run/postern/control.sock"
    )
    (eq "json: secrets stay references" (rendered full).tlsa.providers.ns1.key.secret
      "%{file:${credentialsDir}/tsig}%"
    )
    (check "json: no credential file path in the rendered configuration" (
      !(lib.any (p: contains p (renderedText full)) credentialPaths)
    ) (renderedText full))
    (check "json: no key material in the rendered configuration" (
      !(contains "PRIVATE KEY" (renderedText full)) && !(contains "c2VjcmV0" (renderedText full))
    ) (renderedText full))
    (check "json: checked at build time with check-config --offline" (
      contains "${exe} check-config ${settingsFile full} --offline" (script full)
    ) (script full))
    (check "json: checkConfig = false skips the check" (!(contains "check-config" (script noCheck)))
      (script noCheck)
    )
    (check "json: no check when the build machine cannot run the host's postern"
      (!(contains "check-config" (script cross)))
      (script cross)
    )
    (eq "json: /etc/postern/config.json is the checked file"
      full.environment.etc."postern/config.json".source.outPath
      full.services.postern.configFile.outPath
    )

    # --- the daemon's unit
    (eq "service: Type=notify-reload" (svc full).Type "notify-reload")
    (eq "service: ExecStart" (svc full).ExecStart "${exe} serve --config /etc/postern/config.json")
    (check "service: the program is the package's meta.mainProgram (lib.getExe)"
      (lib.hasSuffix "/bin/postern-fork serve --config /etc/postern/config.json"
        (svc otherProgram).ExecStart
      )
      (svc otherProgram).ExecStart
    )
    (check "service: WatchdogSec set" ((svc full) ? WatchdogSec) "no WatchdogSec")
    (check "service: no ExecReload (notify-reload sends SIGHUP)" (!((svc full) ? ExecReload))
      "ExecReload set"
    )
    (eq "service: reload when the configuration changes" daemon.reloadTriggers [
      full.services.postern.configFile
    ])
    (check "service: restart when listeners change" (
      let
        triggers = c: c.systemd.services.postern.restartTriggers;
      in
      triggers full != triggers noSocketsHighPorts && triggers full != [ ]
    ) "restartTriggers do not follow the listeners")
    (eq "service: started at boot (the queue must be delivered)"
      full.systemd.services.postern.wantedBy
      [ "multi-user.target" ]
    )
    (eq "service: state, runtime, user"
      {
        inherit (svc full)
          DynamicUser
          StateDirectory
          RuntimeDirectory
          UMask
          ;
      }
      {
        DynamicUser = true;
        StateDirectory = "postern";
        RuntimeDirectory = "postern";
        UMask = "0077";
      }
    )
    (eq "service: hardening"
      {
        inherit (svc full)
          ProtectSystem
          PrivateTmp
          NoNewPrivileges
          ProtectHome
          PrivateDevices
          PrivateUsers
          ProtectKernelTunables
          ProtectKernelModules
          ProtectKernelLogs
          ProtectControlGroups
          ProtectClock
          LockPersonality
          MemoryDenyWriteExecute
          RestrictNamespaces
          RestrictRealtime
          RestrictSUIDSGID
          SystemCallArchitectures
          RestrictAddressFamilies
          ;
      }
      {
        ProtectSystem = "strict";
        PrivateTmp = true;
        NoNewPrivileges = true;
        ProtectHome = true;
        PrivateDevices = true;
        PrivateUsers = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        SystemCallArchitectures = "native";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
      }
    )
    (check "service: system call filter @system-service"
      (lib.elem "@system-service" (svc full).SystemCallFilter)
      (builtins.toJSON (svc full).SystemCallFilter)
    )
    (eq "firewall: public listener ports only" full.networking.firewall.allowedTCPPorts [
      25
      465
    ])
    (eq "firewall: closed unless asked" defaults.networking.firewall.allowedTCPPorts [ ])

    # --- tlsa.autoUpdate
    (eq "timer: present when tlsa.autoUpdate.enable" (lib.attrNames full.systemd.timers) [
      "postern-tlsa-sync"
    ])
    (eq "timer: absent otherwise" noTimer.systemd.timers { })
    (check "timer: no sync service either" (!(noTimer.systemd.services ? postern-tlsa-sync))
      "postern-tlsa-sync.service defined"
    )
    (eq "timer: every 5 minutes and after boot"
      {
        inherit (full.systemd.timers.postern-tlsa-sync.timerConfig) OnUnitActiveSec OnBootSec Unit;
      }
      {
        OnUnitActiveSec = "5min";
        OnBootSec = "1min";
        Unit = "postern-tlsa-sync.service";
      }
    )
    (eq "timer: started by timers.target" full.systemd.timers.postern-tlsa-sync.wantedBy [
      "timers.target"
    ])
    (eq "timer: runs tlsa sync as a oneshot"
      {
        inherit (syncSvc full) Type ExecStart;
      }
      {
        Type = "oneshot";
        ExecStart = "${exe} tlsa sync --config /etc/postern/config.json";
      }
    )
    (eq "timer: the sync unit is confined like the daemon"
      {
        inherit (syncSvc full)
          DynamicUser
          User
          ProtectSystem
          CapabilityBoundingSet
          ;
      }
      {
        DynamicUser = true;
        User = "postern";
        ProtectSystem = "strict";
        CapabilityBoundingSet = [ "" ];
      }
    )
    # The sync asks the running daemon over the control socket; with socket
    # activation no daemon may be running, so the unit starts it first
    # rather than open the store itself while a connection starts one.
    (check "timer: the sync unit requires the daemon and runs after it" (
      lib.elem "postern.service" (sync full).requires
      && lib.elem "postern.service" (sync full).after
    ) "requires=${toString (sync full).requires} after=${toString (sync full).after}")
    (eq "timer: the sync unit has the daemon's user, state and credentials"
      (lib.getAttrs sameUserAndState (syncSvc full))
      (lib.getAttrs sameUserAndState (svc full))
    )
    (eq "store: every unit running postern runs as its dynamic user, never root"
      (lib.mapAttrsToList (name: s: {
        inherit name;
        user = s.serviceConfig.User or "root";
        dynamic = s.serviceConfig.DynamicUser or false;
      }) (unitsRunningPostern full))
      [
        {
          name = "postern";
          user = "postern";
          dynamic = true;
        }
        {
          name = "postern-tlsa-sync";
          user = "postern";
          dynamic = true;
        }
      ]
    )

    # --- acmeCertificate
    (eq "acme: the certificate is read in place" (rendered acme).certificates.default {
      cert = "%{file:/var/lib/acme/mx1.example.org/fullchain.pem}%";
      privateKey = "%{file:/var/lib/acme/mx1.example.org/key.pem}%";
    })
    (eq "acme: group access, not LoadCredential"
      [
        (svc acme).SupplementaryGroups
        (svc acme).LoadCredential
        (svc acme).PrivateUsers
      ]
      [
        [ "acme" ]
        [ ]
        false
      ]
    )
    (eq "acme: a renewal reloads postern" acmeCert.reloadServices [ "postern.service" ])
    (check "acme: postern waits for the certificate unit"
      (lib.elem "acme-mx1.example.org.service" acme.systemd.services.postern.after)
      (toString acme.systemd.services.postern.after)
    )
    (eq "acme: a renewal starts tlsa sync" acme.systemd.paths.postern-tlsa-sync.pathConfig {
      PathChanged = "/var/lib/acme/mx1.example.org/fullchain.pem";
      Unit = "postern-tlsa-sync.service";
    })
    (eq "acme: no path unit without tlsa.autoUpdate" acmeNoTimer.systemd.paths { })

    # --- tlsa.rollover.export
    (eq "export: its directory is writable for the daemon" (svc withExport).ReadWritePaths [
      "/var/lib/postern-export"
    ])
    (eq "export: nothing extra is writable without it" (svc full).ReadWritePaths [ ])

    # --- enable = false
    (eq "disabled: defines no unit"
      [
        disabled.systemd.services
        disabled.systemd.sockets
        disabled.systemd.timers
      ]
      [
        { }
        { }
        { }
      ]
    )

    # --- nixpkgs conventions
    (check "module: meta.doc is a file that exists"
      (full.meta.doc != null && builtins.pathExists full.meta.doc)
      (builtins.toJSON full.meta.doc)
    )
    (eq "package: meta.mainProgram" package.meta.mainProgram "postern")
    (check "package: the man page and completions are installed from the binary"
      (
        lib.hasInfix "postern generate man" package.postInstall
        && lib.hasInfix "installShellCompletion" package.postInstall
      )
      package.postInstall
    )
    # The build sandbox has no root, network, ldns-dane or danetool, and
    # holds only the source tree: the library's unit tests run, the tests
    # that need more are skipped (nix/README.md).
    (eq "package: the check phase runs the library's unit tests only" package.cargoTestFlags [
      "--lib"
    ])
    (check "package: the tests needing root, the test world or external tools are skipped"
      (lib.all (t: lib.elem "--skip=${t}" (package.checkFlags or [ ])) [
        "mta_sts::world_tests"
        "dane::tests::tools"
      ])
      (builtins.toJSON (package.checkFlags or null))
    )
  ];

  failed = lib.filter (r: !r.ok) results;
in
{
  passed = lib.length results - lib.length failed;
  failed = lib.length failed;
  results = map (r: {
    inherit (r) name ok;
    detail = if r.ok then "" else r.detail;
  }) results;
}
