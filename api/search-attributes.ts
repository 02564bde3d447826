// Custom search attributes that make any job one query away in the Temporal UI.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const JobIdKey = defineSearchAttributeKey('JobId', SearchAttributeType.KEYWORD);
export const TenantKey = defineSearchAttributeKey('Tenant', SearchAttributeType.KEYWORD);
export const TierKey = defineSearchAttributeKey('Tier', SearchAttributeType.KEYWORD);
export const JobStateKey = defineSearchAttributeKey('JobState', SearchAttributeType.KEYWORD);
export const AcceleratorTypeKey = defineSearchAttributeKey('AcceleratorType', SearchAttributeType.KEYWORD);
export const RegionKey = defineSearchAttributeKey('Region', SearchAttributeType.KEYWORD);
export const WaitingReasonKey = defineSearchAttributeKey('WaitingReason', SearchAttributeType.KEYWORD);
/** At home: the peer region a job was handed off to; on a copy at a peer: the home region it came from. */
export const HandoffPeerKey = defineSearchAttributeKey('HandoffPeer', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [
  JobIdKey,
  TenantKey,
  TierKey,
  JobStateKey,
  AcceleratorTypeKey,
  RegionKey,
  WaitingReasonKey,
  HandoffPeerKey,
];

/** `--search-attribute` flags for `temporal server start-dev`. */
export function devServerSearchAttributeFlags(): string[] {
  return SEARCH_ATTRIBUTES.flatMap((k) => ['--search-attribute', `${k.name}=Keyword`]);
}
