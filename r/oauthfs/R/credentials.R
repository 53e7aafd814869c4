#' OAuth credentials for an integration
#'
#' The current access token of the integration with guid `audience`, read
#' from `<mount>/<guid>/token.json` in one read, so that its expiry is its
#' own. oauthfs refreshes the token when it is read, so call this each time
#' you need a token rather than keeping one. Never print or log the token.
#'
#' @param audience The integration's guid (in either case), from
#'   [findOAuthIntegration()] or [getOAuthIntegrations()].
#' @inheritParams getOAuthIntegrations
#' @return A list:
#' \describe{
#'   \item{access_token}{The token, a string.}
#'   \item{token_type}{`"Bearer"`, unless the provider said otherwise.}
#'   \item{expiry}{When the token expires, a `POSIXct` in UTC; `NA` when it
#'     does not expire.}
#'   \item{audience}{The guid.}
#' }
#' When no token can be had it signals an error (see [oauthfs-package]):
#' of class `oauthfs_not_signed_in` when you are not signed in,
#' `oauthfs_expired` (also `oauthfs_not_signed_in`) when you must sign in
#' again, `oauthfs_io_error` when the provider or the broker is down,
#' `oauthfs_not_found` when no integration has that guid, and
#' `oauthfs_no_mount` when nothing is mounted at `mount`; each is also of
#' class `oauthfs_error` and names the path it tried.
#' @examples
#' \dontrun{
#' guid <- Sys.getenv("GITHUB_INTEGRATION_ID")
#' creds <- tryCatch(getOAuthCredentials(audience = guid),
#'   oauthfs_not_signed_in = function(e) {
#'     message(conditionMessage(e))
#'     NULL
#'   }
#' )
#' if (!is.null(creds)) cat("Token expires at:", format(creds$expiry), "\n")
#' }
#' @export
getOAuthCredentials <- function(audience, mount = oauthfs_mount()) {
  mount <- oauthfs_mount(mount)
  check_string(audience, "audience")
  guid <- tolower(audience)
  if (!grepl(guid_pattern, guid)) {
    read_index(mount) # a missing mount says so first
    oauthfs_abort("oauthfs_not_found", sprintf(
      "oauthfs: '%s' is not an integration's guid (at %s); find one with findOAuthIntegration(name = )",
      audience, mount
    ), path = file.path(mount, audience), mount = mount, guid = audience)
  }
  doc <- read_token_json(mount, guid, file.path(mount, guid, "token.json"))
  list(
    access_token = doc$access_token,
    token_type = doc$token_type,
    expiry = parse_expiry(if (is.null(doc$expiry)) "" else doc$expiry),
    audience = guid
  )
}

# read_token_json reads a token.json at path of the integration guid, or
# signals the error of the failed read.
read_token_json <- function(mount, guid, path) {
  r <- mount_read(path)
  if (!r$ok) token_error(mount, guid, r)
  doc <- tryCatch(jsonlite::parse_json(r$text, simplifyVector = FALSE), error = function(e) NULL)
  if (is.null(doc) || !is.character(doc$access_token) || !nzchar(doc$access_token)) {
    token_error(mount, guid, list(path = path, reason = "not a token.json"))
  }
  doc
}

#' OAuth2 tokens for other resources, from the same sign-in
#'
#' Like rstudioapi's `getDelegatedAzureToken()`: Microsoft Entra (and any
#' provider with RFC 8707 resource indicators) gives tokens for other
#' resources with the refresh token of one sign-in. The token comes from
#' the integration's token variant for `resource`
#' (`<guid>/tokens/<variant>/token.json`) when the administrator configured
#' one, else from the broker (`oauthfs token --resource`, the command on
#' `PATH`) for a resource the integration lists in `resources`.
#'
#' @param resource The resource, normally a URL, such as
#'   `"https://storage.azure.com"`.
#' @param integration The integration's guid or name; `NULL` (the default)
#'   for the one integration whose variants or resources name `resource`.
#' @inheritParams getOAuthIntegrations
#' @return A list: `access_token`, `token_type`, `expires_in` (seconds,
#'   `NA` for a token that does not expire), `expiry` (a `POSIXct` in UTC),
#'   `resource` and `audience` (the integration's guid). Errors are of the
#'   classes of [getOAuthCredentials()]; `oauthfs_not_found` also when no
#'   integration gives tokens for `resource`, and `oauthfs_error` when
#'   several do.
#' @examples
#' \dontrun{
#' storage <- getDelegatedAzureToken("https://storage.azure.com")
#' httr2::req_auth_bearer_token(req, storage$access_token)
#' }
#' @export
getDelegatedAzureToken <- function(resource, integration = NULL, mount = oauthfs_mount()) {
  mount <- oauthfs_mount(mount)
  check_string(resource, "resource")
  index <- read_index(mount)
  gives <- function(i) {
    resource %in% unlist(i$resources) || any(vapply(i$tokens, function(v) identical(v$resource, resource), TRUE))
  }
  if (!is.null(integration)) {
    check_string(integration, "integration")
    found <- Filter(function(i) identical(i$guid, tolower(integration)) || identical(i$name, integration), index)
    if (length(found) == 0 || !gives(found[[1]])) {
      why <- if (length(found) == 0) "there is no such integration" else "it names no such variant or resource"
      oauthfs_abort("oauthfs_not_found", sprintf(
        "oauthfs: integration '%s' at %s gives no tokens for '%s': %s", integration, mount, resource, why
      ), path = file.path(mount, "integrations.json"), mount = mount, guid = integration)
    }
  } else {
    found <- Filter(gives, index)
    if (length(found) == 0) {
      oauthfs_abort("oauthfs_not_found", sprintf(
        "oauthfs: no integration at %s gives tokens for '%s'; an administrator names it in a token variant or in resources",
        mount, resource
      ), path = file.path(mount, "integrations.json"), mount = mount, guid = NA_character_)
    }
    if (length(found) > 1) {
      oauthfs_abort("oauthfs_error", sprintf(
        "oauthfs: several integrations give tokens for '%s' (%s); say which with integration = ",
        resource, paste(vapply(found, function(i) i$name, ""), collapse = ", ")
      ), path = file.path(mount, "integrations.json"), mount = mount, guid = NA_character_)
    }
  }
  i <- found[[1]]
  variant <- NULL
  for (v in i$tokens) if (identical(v$resource, resource)) variant <- v$name
  doc <- if (!is.null(variant)) {
    read_token_json(mount, i$guid, file.path(mount, i$guid, "tokens", variant, "token.json"))
  } else {
    broker_token(mount, i, resource)
  }
  expiry <- parse_expiry(if (is.null(doc$expiry)) "" else doc$expiry)
  list(
    access_token = doc$access_token,
    token_type = doc$token_type,
    expires_in = if (is.na(expiry)) NA_integer_ else max(0L, as.integer(difftime(expiry, Sys.time(), units = "secs"))),
    expiry = expiry,
    resource = resource,
    audience = i$guid
  )
}

# broker_token asks the broker, through the oauthfs command, for a token
# of integration i for resource, as token.json.
broker_token <- function(mount, i, resource) {
  bin <- Sys.which("oauthfs")
  if (!nzchar(bin)) {
    oauthfs_abort("oauthfs_error", sprintf(
      "oauthfs: a token for '%s' needs the oauthfs command, which is not on PATH", resource
    ), path = NA_character_, mount = mount, guid = i$guid)
  }
  out <- suppressWarnings(system2(bin, c("token", "--json", "--resource", shQuote(resource), shQuote(i$name)),
    stdout = TRUE, stderr = TRUE
  ))
  status <- attr(out, "status")
  if (!is.null(status) && status != 0) {
    class <- switch(as.character(status),
      "3" = "oauthfs_not_found",
      "4" = "oauthfs_not_signed_in",
      "5" = c("oauthfs_expired", "oauthfs_not_signed_in"),
      "6" = "oauthfs_io_error",
      "oauthfs_error"
    )
    oauthfs_abort(class, sprintf("oauthfs: %s", paste(out, collapse = " ")),
      path = NA_character_, mount = mount, guid = i$guid, name = i$name
    )
  }
  jsonlite::parse_json(paste(out, collapse = "\n"), simplifyVector = FALSE)
}

# parse_expiry turns the expiry file's RFC 3339 UTC time into a POSIXct;
# an empty file (a token that does not expire) is NA.
parse_expiry <- function(s) {
  if (!nzchar(s)) {
    return(.POSIXct(NA_real_, tz = "UTC"))
  }
  as.POSIXct(s, format = "%Y-%m-%dT%H:%M:%OS", tz = "UTC")
}

# The errno messages of Linux (glibc, in English) and what they mean on an
# oauthfs mount (docs/design.md, "Errors a reader sees").
errno_classes <- c(
  "No such file or directory" = "oauthfs_not_found",
  "Required key not available" = "oauthfs_not_signed_in",
  "Key has expired" = "oauthfs_expired",
  "Input/output error" = "oauthfs_io_error",
  "Transport endpoint is not connected" = "oauthfs_no_mount",
  "Permission denied" = "oauthfs_error" # not the mount's owner
)

# The meta.json statuses that explain a failed read, for a reason in
# another language or none.
status_classes <- c(
  not_signed_in = "oauthfs_not_signed_in",
  expired = "oauthfs_expired",
  error = "oauthfs_io_error"
)

# token_error signals the error for a failed read r (path, reason) of an
# integration's token or expiry: by the errno's message, else by the
# integration's status after the failure.
token_error <- function(mount, guid, r) {
  class <- unname(errno_classes[as.character(r$reason)[1]])
  if (identical(class, "oauthfs_no_mount")) no_mount(mount, r)
  index <- read_index(mount) # signals oauthfs_no_mount when there is none
  info <- NULL
  for (i in index) if (identical(i$guid, guid)) info <- i
  if (is.na(class)) {
    class <- if (is.null(info)) "oauthfs_not_found" else unname(status_classes[as.character(info$status)[1]])
  }
  if (is.na(class)) class <- "oauthfs_error"
  name <- if (is.null(info)) guid else info$name
  why <- sprintf("%s: %s", r$path, r$reason)
  detail <- if (!is.null(info$error)) paste0("; ", info$error) else ""
  message <- switch(class,
    oauthfs_not_found = sprintf(
      "oauthfs: no integration with guid '%s' at %s (%s); find one with findOAuthIntegration(name = )",
      guid, mount, why
    ),
    oauthfs_not_signed_in = sprintf(
      "oauthfs: not signed in to '%s' (%s); sign in with: oauthfs login '%s'", name, why, name
    ),
    oauthfs_expired = sprintf(
      "oauthfs: the sign-in to '%s' has expired (%s%s); sign in again with: oauthfs login '%s'",
      name, why, detail, name
    ),
    oauthfs_io_error = sprintf(
      "oauthfs: no token for '%s' now: the provider or the broker is unreachable (%s%s); try again later",
      name, why, detail
    ),
    sprintf("oauthfs: cannot read the token of '%s' (%s)", name, why)
  )
  if (identical(class, "oauthfs_expired")) class <- c(class, "oauthfs_not_signed_in")
  oauthfs_abort(class, message,
    path = r$path, mount = mount, guid = guid, name = info$name, reason = r$reason
  )
}
